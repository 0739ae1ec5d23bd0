-- percentile.lua - the value below which `percentile` % of the mass lies, from a histogram.
--
--   qcal run percentile DUMP [percentile=99.99] [symmetric=false] [bins=2048] ...
--
-- Non-negative tensors are clipped on the upper side only; symmetric specs use |x|
-- (ONNX Runtime's form: symmetric=true percentile=99.999); otherwise both tails.
local calib = require("calib")

local P = calib.params{ percentile = 99.99, bins = 2048, side = "auto" }
local pass, observed = calib.observe(calib.tensors(P), "histogram",
                                     { bins = P.bins, abs = P.symmetric }, P)
calib.estimate_all(pass, observed, "percentile", { percentile = P.percentile, side = P.side }, P)
