-- lib/calib.lua - what the bundled recipes share: selecting tensors, building specs,
-- observing every tensor in one pass and turning statistics into results.
local qcal = require("qcal")

local M = {}

-- The parameters every bundled recipe takes, merged into a recipe's own.
function M.params(own)
    local all = {
        bits = 8, symmetric = false, signed = false, narrow_range = false,
        per_channel = false, ignore = "", ignore_ops = "", max_samples = 0,
    }
    for k, v in pairs(own or {}) do all[k] = v end
    local P = qcal.params(all)
    -- every whole-number parameter counts something (samples, bins, levels, steps, bits)
    for k, v in pairs(all) do
        if math.type(v) == "integer" and math.type(P[k]) == "integer" and P[k] < 0 then
            qcal.param_error(string.format("%s must be >= 0, got %d", k, P[k]))
        end
    end
    return P
end

-- "a.*.b,c?" -> anchored Lua patterns.
local function glob_patterns(list)
    local out = {}
    for item in string.gmatch(list, "[^,%s]+") do
        local p = item:gsub("[%^%$%(%)%%%.%[%]%+%-]", "%%%0"):gsub("%*", ".*"):gsub("%?", ".")
        out[#out + 1] = "^" .. p .. "$"
    end
    return out
end

local function matches_any(s, patterns)
    for _, p in ipairs(patterns) do
        if s and string.find(s, p) then return true end
    end
    return false
end

-- Tensors to calibrate: all activations (or the given list, e.g. qcal.weights()), minus the
-- ignored scope (names or original names matching `ignore`, op types matching `ignore_ops`;
-- comma-separated globs).
function M.tensors(P, list)
    local names, ops = glob_patterns(P.ignore or ""), glob_patterns(P.ignore_ops or "")
    local out = {}
    for _, t in ipairs(list or qcal.tensors()) do
        local skip = matches_any(t.name, names) or matches_any(t.orig_name, names)
            or matches_any(t.op_type, ops)
        if skip then
            qcal.log(string.format("%s: ignored (ignored scope)", t.name))
        else
            out[#out + 1] = t
        end
    end
    return out
end

-- The spec of a tensor: per channel only where the tensor has a channel axis.
function M.spec(P, t, overrides)
    local s = {
        bits = P.bits, symmetric = P.symmetric, signed = P.signed or P.symmetric,
        narrow_range = P.narrow_range,
        per_channel = P.per_channel and t.channel_axis ~= nil, axis = t.channel_axis,
    }
    for k, v in pairs(overrides or {}) do s[k] = v end
    return qcal.spec(s)
end

-- One pass: observer (with params, a table or a function of the tensor) on every tensor.
-- `pass_options` go to qcal.pass (e.g. { weights = true }).
function M.observe(tensors, observer, params, P, pass_options)
    local pass = qcal.pass(pass_options)
    local observed = {}
    for _, t in ipairs(tensors) do
        local p = type(params) == "function" and params(t) or params
        observed[#observed + 1] = { tensor = t, id = pass:observe(t, observer, p) }
    end
    pass:run{ max_rows = P and P.max_samples or 0 }
    return pass, observed
end

-- Estimates and puts every observed tensor's range.
function M.estimate_all(pass, observed, estimator, eparams, P, method)
    for _, o in ipairs(observed) do
        local spec = M.spec(P, o.tensor)
        local range, note = qcal.estimate(estimator, pass:statistic(o.id), spec, eparams)
        qcal.put(o.tensor, { method = method or estimator, spec = spec, range = range, note = note })
    end
end

-- ---- entropy (KL) thresholds, shared by kl.lua and autotune.lua ------------------------------

-- The fixed histogram layout kl's variant `P.variant` builds for a tensor whose max|x| is amax.
local function kl_layout(P, amax)
    if amax == 0 then return { bins = P.bins, abs = true, lo = 0, hi = 1 } end
    if P.variant == "tpu" then
        local w = amax / (P.bins - 1)
        return { bins = P.bins, abs = true, lo = -0.5 * w, hi = (P.bins - 0.5) * w }
    end
    return { bins = P.bins, abs = true, lo = 0, hi = amax }
end

-- KL ranges of every tensor: a list of { tensor, spec, range, note, amax = max|x| }.
-- P: variant, bins, levels, start, smooth, passes (1: the re-binned one-pass histogram;
-- 2: max|x| first, then the reference's own bins), max_samples and the spec parameters.
function M.kl_ranges(tensors, P)
    if P.passes ~= 1 and P.passes ~= 2 then
        qcal.param_error(string.format("passes must be 1 or 2, got %s", tostring(P.passes)))
    end
    local first = qcal.pass()
    local seen = {}
    for _, t in ipairs(tensors) do
        local o = { tensor = t, minmax = first:observe(t, "minmax") }
        if P.passes == 1 then o.hist = first:observe(t, "histogram", { bins = P.bins, abs = true }) end
        seen[#seen + 1] = o
    end
    first:run{ max_rows = P.max_samples }
    local hist_pass = first
    if P.passes == 2 then
        hist_pass = qcal.pass()
        for _, o in ipairs(seen) do
            local st = first:statistic(o.minmax)
            o.amax = math.max(math.abs(st:array("lo")[1]), math.abs(st:array("hi")[1]))
            o.hist = hist_pass:observe(o.tensor, "fixed_histogram", kl_layout(P, o.amax))
        end
        hist_pass:run{ max_rows = P.max_samples }
    end
    local eparams = { variant = P.variant, bins = P.bins, levels = P.levels, start = P.start,
                      smooth = P.smooth }
    local out = {}
    for _, o in ipairs(seen) do
        local st = first:statistic(o.minmax)
        local amax = math.max(math.abs(st:array("lo")[1]), math.abs(st:array("hi")[1]))
        local spec = M.spec(P, o.tensor)
        local range, note = qcal.estimate("kl", hist_pass:statistic(o.hist), spec, eparams)
        out[#out + 1] = { tensor = o.tensor, spec = spec, range = range, note = note, amax = amax }
    end
    return out
end

return M
