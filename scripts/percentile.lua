-- percentile.lua - the range holding `percentile` % of the values, from a histogram.
--
--   qcal run percentile DUMP [percentile=99.99] [symmetric=false] [bins=2048] ...
--
-- Affine specs lose (100 - p) / 2 % of the values off each tail (none off a tail at 0, as of a
-- non-negative tensor), as ONNX Runtime and INC; symmetric specs use |x|
-- (ONNX Runtime's form: symmetric=true percentile=99.999).
local qcal = require("qcal")
local calib = require("calib")

local P = calib.params{ percentile = 99.99, bins = 2048, side = "auto" }
if P.per_channel then -- its histograms are per tensor
    qcal.param_error("percentile ranges are per tensor: per_channel=true is not available (minmax and pot have per-channel ranges)")
end
if P.side ~= "auto" and P.side ~= "two_sided" and P.side ~= "abs" then
    qcal.param_error("side must be auto, two_sided or abs, got '" .. P.side .. "'")
end
-- the histogram the side reads: |x| for abs (auto: symmetric specs), else x
local abs = P.side == "abs" or (P.side == "auto" and P.symmetric)
local pass, observed = calib.observe(calib.tensors(P), "histogram", { bins = P.bins, abs = abs }, P)
calib.estimate_all(pass, observed, "percentile", { percentile = P.percentile, side = P.side }, P)
