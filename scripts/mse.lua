-- mse.lua - the threshold among fractions of the absolute max with the least
-- quantize-dequantize squared error, computed from a histogram (Horizon / MQBench style).
--
--   qcal run mse DUMP [stride=1] [symmetric=true] ...   (stride: percent step; up to 20 is faster)
local calib = require("calib")

local P = calib.params{ symmetric = true, stride = 1, bins = 2048 }
local pass, observed = calib.observe(calib.tensors(P), "histogram",
                                     { bins = P.bins, abs = P.symmetric }, P)
calib.estimate_all(pass, observed, "mse", { stride = P.stride }, P)
