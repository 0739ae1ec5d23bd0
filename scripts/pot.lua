-- pot.lua - OpenVINO POT DefaultQuantization's ranges (its MinMaxQuantization step).
--
--   qcal run pot DUMP [preset=performance] [range_estimator=default] [stat_subset_size=300]
--                     [outlier_prob=0.0001] [weights=true] [ignore=...] [ignore_ops=...]
--
-- preset: performance = weights and activations symmetric; mixed = weights symmetric,
-- activations asymmetric; accuracy = both asymmetric (POT keeps it only for VPU/GNA).
-- Activations are per tensor, with statistics per sample (batch_stats) over the first
-- stat_subset_size samples, turned into a range by the `quantile` estimator with POT's
-- range_estimator preset ("default": min/max, "quantile": outlier_prob quantiles) and its
-- border rules. Weights (/weights) are per output channel: symmetric on [-127, 127]
-- (POT's q8_w_sym) or asymmetric. Any border can be overridden: min_type, min_aggregator,
-- max_type, max_aggregator (see `qcal list`).
--
-- Written as POT's FakeQuantize does it: a symmetric signed activation gets scale hi/127 and
-- zero point 0 on the full int8 grid, i.e. the range [-hi * 128/127, hi]; a symmetric
-- activation with no negative value gets the unsigned grid [0, hi] (scale hi/255).
-- FastBiasCorrection and ActivationChannelAlignment change the model: out of scope here.
local qcal = require("qcal")
local calib = require("calib")

local P = calib.params{
    preset = "performance", range_estimator = "default", stat_subset_size = 300,
    outlier_prob = 1e-4, unit = "sample", weights = true,
    min_type = "auto", min_aggregator = "auto", max_type = "auto", max_aggregator = "auto",
    cut = 0.01,
}

if P.max_samples ~= 0 then -- one limit, by POT's name
    qcal.param_error("pot limits its samples with stat_subset_size (POT's name), not max_samples")
end

local symmetric_by_preset = {
    performance = { weights = true, activations = true },
    mixed = { weights = true, activations = false },
    accuracy = { weights = false, activations = false },
}
local symmetric = symmetric_by_preset[P.preset]
if not symmetric then
    qcal.param_error("preset must be performance, mixed or accuracy, got '" .. P.preset .. "'")
end

local estimator_params = {
    preset = P.range_estimator, min_type = P.min_type, min_aggregator = P.min_aggregator,
    max_type = P.max_type, max_aggregator = P.max_aggregator, cut = P.cut,
}
local method = "pot:" .. P.preset .. "/" .. P.range_estimator

-- Activations: the estimate on POT's grid, then written the way POT's FakeQuantize is.
local function activation_result(t, stat)
    local sym = symmetric.activations
    local grid = qcal.spec{ bits = P.bits, symmetric = sym, signed = false }
    local range, note = qcal.estimate("quantile", stat, grid, estimator_params)
    local function with(text) return note and text and (note .. "; " .. text) or note or text end
    if sym and range.lo < 0 then
        local half = 2 ^ (P.bits - 1)
        range = { lo = -range.hi * half / (half - 1), hi = range.hi }
        return range, qcal.spec{ bits = P.bits, signed = true }, with("symmetric int8: scale hi/127")
    end
    return range, qcal.spec{ bits = P.bits }, with(sym and "symmetric, no negative value: unsigned" or nil)
end

local tensors = calib.tensors(P)
local pass, observed = calib.observe(tensors, "batch_stats", {
    unit = P.unit, outlier_prob = P.outlier_prob,
    quantiles = P.range_estimator == "quantile" or P.min_type:find("quantile") ~= nil
        or P.max_type:find("quantile") ~= nil,
}, { max_samples = P.stat_subset_size })
for _, o in ipairs(observed) do
    local range, spec, note = activation_result(o.tensor, pass:statistic(o.id))
    qcal.put(o.tensor, { method = method, spec = spec, range = range, note = note })
end

if not P.weights then return end
local weights = calib.tensors(P, qcal.weights{ optional = true })
if #weights == 0 then return end
local wpass, wobserved = calib.observe(weights, "batch_stats",
                                       { per_channel = true, quantiles = false }, nil,
                                       { weights = true })
for _, o in ipairs(wobserved) do
    local spec = qcal.spec{
        bits = P.bits, symmetric = symmetric.weights, signed = true,
        narrow_range = symmetric.weights, per_channel = true, axis = o.tensor.channel_axis,
    }
    local range, note = qcal.estimate("quantile", wpass:statistic(o.id), spec, { preset = "default" })
    qcal.put(o.tensor, { method = method, spec = spec, range = range, note = note })
end
