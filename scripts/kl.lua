-- kl.lua - entropy (KL-divergence) calibration, TensorRT style by default:
-- int8 symmetric narrow range ([-127, 127], scale = threshold / 127).
--
--   qcal run kl DUMP [variant=...] [levels=128] [bins=2048] ...
--
-- variant selects whose algorithm to reproduce (see `qcal list`, estimator kl).
local calib = require("calib")

local P = calib.params{ symmetric = true, narrow_range = true, variant = "default",
                        bins = 2048, levels = 128, start = 128 }
local eparams = { bins = P.bins, levels = P.levels, start = P.start }
if P.variant ~= "default" then eparams.variant = P.variant end
local pass, observed = calib.observe(calib.tensors(P), "histogram",
                                     { bins = P.bins, abs = true }, P)
calib.estimate_all(pass, observed, "kl", eparams, P)
