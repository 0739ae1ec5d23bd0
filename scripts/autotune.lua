-- autotune.lua - tpu-mlir's auto-tune: start from the KL threshold, try thresholds evenly
-- between it and max|x|, keep the one whose consuming layer's output suffers least.
--
--   qcal run autotune DUMP [steps=10] [min_gap=0.01] [tune_samples=32] [variant=trt] ...
--
-- Per tensor: t_k = t_KL + k (max|x| - t_KL) / steps for k = 0 .. steps (t_KL itself is
-- candidate 0, as in tpu-mlir's current tuner); the first strict least error wins. The
-- error is tpu-mlir's distance, the mean over the first tune_samples samples of
-- ||y - y_q||_2 / ||y||_1, where y is the output of a layer under /layers that consumes the
-- tensor, y_q the same layer on the input fake-quantized with the candidate and weights
-- fake-quantized per output channel (int8 symmetric, scale max|w| / 127; weight_bits).
-- A tensor consumed by several layers is tuned against each, and the largest of their
-- chosen thresholds is kept (tpu-mlir's rule). Without a consuming layer, the tensor's own
-- quantize-dequantize mse decides. A gap max|x| - t_KL <= min_gap (tensor units, as
-- tpu-mlir) is not tuned.
--
-- tpu-mlir tunes on 5 samples; 32 is the default here because 5 is noisy and a layer
-- forward per candidate and sample is cheap next to reading the dump.
local qcal = require("qcal")
local calib = require("calib")

local P = calib.params{
    symmetric = true, narrow_range = true, variant = "trt", bins = 2048, levels = 128,
    start = 128, smooth = 0.0001, passes = 2, steps = 10, min_gap = 0.01, tune_samples = 32,
    weight_bits = 8,
}
if P.steps < 1 or P.steps > 4095 then -- an evaluation takes at most 4096 candidates a tensor
    qcal.param_error(string.format("steps must be in [1, 4095], got %d", P.steps))
end

local consumers = {}
for _, l in ipairs(qcal.layers()) do
    consumers[l.input] = consumers[l.input] or {}
    table.insert(consumers[l.input], l.name)
end
local weight_spec = { bits = P.weight_bits, symmetric = true, narrow_range = true, per_channel = true }

local function candidates_of(r)
    local t_kl = r.range.hi
    local list = {}
    for k = 0, P.steps do
        local t = t_kl + k * (r.amax - t_kl) / P.steps
        list[#list + 1] = { method = string.format("kl+%d/%d", k, P.steps),
                            range = { lo = r.range.lo < 0 and -t or 0, hi = t } }
    end
    return list
end

-- ---- KL, then one evaluation pass for every tuned tensor and each of its consumers ---------
local tuned = {}
local ev = qcal.evaluation()
for _, r in ipairs(calib.kl_ranges(calib.tensors(P), P)) do
    if r.amax - r.range.hi <= P.min_gap then
        local note = string.format("not tuned: max|x| - t_KL = %g <= %g", r.amax - r.range.hi, P.min_gap)
        if r.note then note = r.note .. "; " .. note end
        qcal.put(r.tensor, { method = "autotune", spec = r.spec, range = r.range, note = note })
    else
        r.candidates = candidates_of(r)
        local entries = {}
        for k, c in ipairs(r.candidates) do entries[k] = { range = c.range, spec = r.spec } end
        r.evals = {}
        for _, layer in ipairs(consumers[r.tensor.name] or {}) do
            table.insert(r.evals, { layer = layer,
                                    id = ev:add(r.tensor, entries, { layer = layer, weight_spec = weight_spec }) })
        end
        if #r.evals == 0 then table.insert(r.evals, { id = ev:add(r.tensor, entries) }) end
        tuned[#tuned + 1] = r
    end
end
ev:run{ max_rows = P.tune_samples }

-- ---- choose: per consumer the first strict least error, then the largest threshold --------
local function first_least(errors, key)
    local best = 1
    for k = 2, #errors do
        if errors[k][key] < errors[best][key] then best = k end
    end
    return best
end

for _, r in ipairs(tuned) do
    local chosen, decider, picks = nil, nil, {}
    for _, e in ipairs(r.evals) do
        local errors = ev:errors(e.id)
        e.errors = errors
        local k = first_least(errors, e.layer and "layer_error" or "mse")
        picks[#picks + 1] = string.format("%s: t = %.6g", e.layer or "tensor mse", r.candidates[k].range.hi)
        if not chosen or r.candidates[k].range.hi > r.candidates[chosen].range.hi then
            chosen, decider = k, e
        end
    end
    for k, c in ipairs(r.candidates) do
        local e = decider.errors[k]
        c.mse, c.sqnr_db, c.cosine, c.layer_error = e.mse, e.sqnr_db, e.cosine, e.layer_error
    end
    local c = r.candidates[chosen]
    local note = string.format("t_KL = %.6g, max|x| = %.6g; %s", r.range.hi, r.amax, table.concat(picks, ", "))
    if #r.evals > 1 then note = note .. "; largest kept" end
    if r.note then note = r.note .. "; " .. note end -- the KL estimate's own (values left out)
    qcal.put(r.tensor, { method = "autotune", spec = r.spec, range = c.range, note = note,
                         metrics = { mse = c.mse, sqnr_db = c.sqnr_db, cosine = c.cosine } })
    qcal.candidates(r.tensor, r.candidates, chosen, decider.layer and "layer_error" or "mse")
end
