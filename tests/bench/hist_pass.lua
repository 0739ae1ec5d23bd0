-- hist_pass.lua - the benchmark's histogram pass: minmax and histogram (2048 bins) observers
-- on every tensor in one pass, then the percentile range of each (issue #3's figure).
local qcal = require("qcal")
local pass = qcal.pass()
local ids = {}
for _, t in ipairs(qcal.tensors()) do
    pass:observe(t, "minmax")
    ids[#ids + 1] = { tensor = t, id = pass:observe(t, "histogram", { bins = 2048 }) }
end
pass:run()
for _, o in ipairs(ids) do
    local spec = qcal.spec{}
    qcal.put(o.tensor, { method = "percentile", spec = spec,
                         range = qcal.estimate("percentile", pass:statistic(o.id), spec) })
end
