-- l2_search.lua - torch HistogramObserver's range: the non-linear search for the [min, max]
-- with the least L2 quantization error over a histogram of x (uint8 affine by default, as
-- torch's default qconfig).
--
--   qcal run l2_search DUMP [levels=0] [bins=2048] [symmetric=false] ...
--
-- levels=0 searches at the spec's number of levels; levels=256 reproduces torch's quirk of
-- judging every spec with 256 levels (it does so whatever the dtype).
local calib = require("calib")

local P = calib.params{ bins = 2048, levels = 0 }
local pass, observed = calib.observe(calib.tensors(P), "histogram", { bins = P.bins }, P)
calib.estimate_all(pass, observed, "l2_search", { bins = P.bins, levels = P.levels }, P)
