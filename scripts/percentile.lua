-- percentile.lua - the range holding `percentile` % of the values, from a histogram.
--
--   qcal run percentile DUMP [percentile=99.99] [symmetric=false] [bins=2048] ...
--
-- Affine specs lose (100 - p) / 2 % of the values off each tail (none off a tail at 0, as of a
-- non-negative tensor), as ONNX Runtime and INC; symmetric specs use |x|
-- (ONNX Runtime's form: symmetric=true percentile=99.999).
local calib = require("calib")

local P = calib.params{ percentile = 99.99, bins = 2048, side = "auto" }
local pass, observed = calib.observe(calib.tensors(P), "histogram",
                                     { bins = P.bins, abs = P.symmetric }, P)
calib.estimate_all(pass, observed, "percentile", { percentile = P.percentile, side = P.side }, P)
