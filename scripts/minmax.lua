-- minmax.lua - ranges from the observed minimum and maximum of every tensor.
--
--   qcal run minmax DUMP [bits=8] [symmetric=false] [per_channel=false] ...
--
-- Activations default to torch's quint8 affine scheme; symmetric=true gives int8 [-t, t].
-- per_channel=true observes along each tensor's channel_axis (tensors without one stay
-- per tensor). average=true uses the moving-average observer (torch's
-- MovingAverageMinMaxObserver) with averaging_constant over batches of batch_size samples.
local qcal = require("qcal")

local P = qcal.params{
    bits = 8,
    symmetric = false,
    signed = false,
    narrow_range = false,
    per_channel = false,
    average = false,
    averaging_constant = 0.01,
    batch_size = 32,
}

local function observer_for(t)
    local per_channel = P.per_channel and t.channel_axis ~= nil
    if P.average then
        return "moving_average_minmax", {
            averaging_constant = P.averaging_constant,
            batch_size = P.batch_size,
            per_channel = per_channel,
        }, per_channel
    end
    return per_channel and "minmax_per_channel" or "minmax", nil, per_channel
end

local pass = qcal.pass()
local observed = {}
for _, t in ipairs(qcal.tensors()) do
    local name, params, per_channel = observer_for(t)
    observed[#observed + 1] = { tensor = t, id = pass:observe(t, name, params), per_channel = per_channel }
end
pass:run()

for _, o in ipairs(observed) do
    local spec = qcal.spec{
        bits = P.bits,
        symmetric = P.symmetric,
        signed = P.signed or P.symmetric,
        narrow_range = P.narrow_range,
        per_channel = o.per_channel,
        axis = o.tensor.channel_axis,
    }
    local range, note = qcal.estimate("minmax", pass:statistic(o.id), spec)
    qcal.put(o.tensor, { method = P.average and "moving_average_minmax" or "minmax",
                         spec = spec, range = range, note = note })
end
