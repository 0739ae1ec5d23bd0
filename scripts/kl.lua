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
local qcal = require("qcal")
local calib = require("calib")

local P = calib.params{ symmetric = true, narrow_range = true, variant = "trt",
                        bins = 2048, levels = 128, start = 128, smooth = 0.0001, passes = 2 }
for _, r in ipairs(calib.kl_ranges(calib.tensors(P), P)) do
    qcal.put(r.tensor, { method = "kl", spec = r.spec, range = r.range, note = r.note })
end
