-- kl.lua - entropy (KL-divergence) calibration, TensorRT style by default:
-- int8 symmetric narrow range ([-127, 127], scale = threshold / 127).
--
--   qcal run kl DUMP [variant=trt|nvpq|tpu] [levels=128] [bins=2048] [passes=2] ...
--
-- variant selects whose algorithm to reproduce (see `qcal list`, estimator kl).
-- passes=2 (default) reads the dump twice: max|x| first, then the histogram on exactly the
-- bins the reference tool would use ([0, max|x|] in `bins` bins; tpu: bins centred on
-- k max|x| / (bins - 1)), so the result is the reference's to the bin. passes=1 reads once
-- and re-bins the exact power-of-two histogram: about half the time, but entropy search is
-- sensitive to which bins of a sparse tail are empty, and re-binning smears them (on heavy
-- tails the threshold can move by many bins).
local calib = require("calib")

local P = calib.params{ symmetric = true, narrow_range = true, variant = "trt",
                        bins = 2048, levels = 128, start = 128, smooth = 0.0001, passes = 2 }
local eparams = { variant = P.variant, bins = P.bins, levels = P.levels, start = P.start,
                  smooth = P.smooth }
local tensors = calib.tensors(P)

-- The fixed histogram layout the variant's reference builds for a tensor whose max|x| is amax.
local function layout(amax)
    if amax == 0 then return { bins = P.bins, abs = true, lo = 0, hi = 1 } end
    if P.variant == "tpu" then
        local w = amax / (P.bins - 1)
        return { bins = P.bins, abs = true, lo = -0.5 * w, hi = (P.bins - 0.5) * w }
    end
    return { bins = P.bins, abs = true, lo = 0, hi = amax }
end

local pass, observed
if P.passes == 1 then
    pass, observed = calib.observe(tensors, "histogram", { bins = P.bins, abs = true }, P)
elseif P.passes == 2 then
    local first, seen = calib.observe(tensors, "minmax", {}, P)
    local amax = {}
    for _, o in ipairs(seen) do
        local st = first:statistic(o.id)
        amax[o.tensor.name] = math.max(math.abs(st:array("lo")[1]), math.abs(st:array("hi")[1]))
    end
    pass, observed = calib.observe(tensors, "fixed_histogram",
                                   function(t) return layout(amax[t.name]) end, P)
else
    error(string.format("passes must be 1 or 2, got %s", tostring(P.passes)))
end
calib.estimate_all(pass, observed, "kl", eparams, P)
