-- eval_pass.lua - benchmark: a minmax pass, then (evaluate=true) one evaluation pass with
-- `candidates` ranges per tensor (fractions of the min/max range, 8-bit affine). The
-- evaluation's own time is this run's minus the run with evaluate=false.
local qcal = require("qcal")
local P = qcal.params{ evaluate = true, candidates = 10 }
local pass, ids = qcal.pass(), {}
for _, t in ipairs(qcal.tensors()) do ids[t.name] = pass:observe(t, "minmax") end
pass:run()
local spec = qcal.spec{ bits = 8 }
local ev = qcal.evaluation()
local evals = {}
for _, t in ipairs(qcal.tensors()) do
    local r = qcal.estimate("minmax", pass:statistic(ids[t.name]), spec)
    local list = {}
    for k = 1, P.candidates do
        local f = 1 - 0.05 * (k - 1)
        list[k] = { range = { lo = r.lo * f, hi = r.hi * f }, spec = spec }
    end
    evals[#evals + 1] = { t = t, id = ev:add(t, list), range = r }
end
if not P.evaluate then return end
ev:run()
for _, e in ipairs(evals) do
    local errors = ev:errors(e.id)
    qcal.put(e.t, { method = "eval-bench", spec = spec, range = e.range,
                    metrics = { mse = errors[1].mse, sqnr_db = errors[1].sqnr_db, cosine = errors[1].cosine } })
end
