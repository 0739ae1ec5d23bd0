-- mix.lua - per tensor, try several ranges and keep the one that hurts least (Horizon's mix,
-- widened as the measurements on trained networks suggest: any estimator can be a candidate).
--
--   qcal run mix DUMP [percentiles=99,99.9,99.99,99.999,100] [methods=kl,mse,quantile]
--                     [criterion=mse] [stat_subset_size=0] [symmetric=false] [bits=8] ...
--
-- One pass observes a histogram of every tensor (of |x| too when kl needs it) and, for
-- `quantile`, POT-style per-sample quantiles (outlier_prob, mean over samples); the
-- candidates are estimated from them; a second pass (the evaluation) measures the exact
-- quantize-dequantize error of every candidate of every tensor on the data, over the first
-- stat_subset_size samples (0: all). The least error wins (ties: the earlier candidate).
--
-- methods: any of minmax (= percentile 100), kl (TensorRT's, on the one-pass histogram; with
-- an affine spec its lower end is raised to the observed minimum, or 0 if that is above),
-- mse, l2_search, quantile. criterion: mse, sqnr_db, cosine, or layer_error (the output of
-- the layer under /layers that consumes the tensor, tpu-mlir's distance; tensors without a
-- consuming layer fall back to mse). Ranges are per tensor. Every candidate and its error is
-- written under /candidates/<tensor>; `qcal show RESULTS --candidates` lists them.
local qcal = require("qcal")
local calib = require("calib")

local P = calib.params{
    percentiles = "99,99.9,99.99,99.999,100", methods = "kl,mse,quantile", criterion = "mse",
    stat_subset_size = 0, bins = 2048, outlier_prob = 1e-4, kl_variant = "trt",
}
if P.per_channel then qcal.param_error("mix compares per-tensor ranges: per_channel must be false") end

local HIGHER_IS_BETTER = { sqnr_db = true, cosine = true }
local KNOWN_METHODS = { minmax = true, kl = true, mse = true, l2_search = true, quantile = true }
local KNOWN_CRITERIA = { mse = true, sqnr_db = true, cosine = true, layer_error = true }
if not KNOWN_CRITERIA[P.criterion] then
    qcal.param_error("criterion must be mse, sqnr_db, cosine or layer_error, got '" .. P.criterion .. "'")
end

local function list_of(text)
    local out = {}
    for item in string.gmatch(text, "[^,%s]+") do out[#out + 1] = item end
    return out
end

local percentiles = {}
for _, p in ipairs(list_of(P.percentiles)) do
    local v = tonumber(p)
    if not v or v <= 0 or v > 100 then qcal.param_error("percentiles: not a percent in (0, 100]: '" .. p .. "'") end
    percentiles[#percentiles + 1] = v
end
if #percentiles > 4000 then -- an evaluation takes at most 4096 candidates a tensor
    qcal.param_error(string.format("percentiles: at most 4000 values, got %d", #percentiles))
end
local methods = {}
for _, m in ipairs(list_of(P.methods)) do
    if not KNOWN_METHODS[m] then
        qcal.param_error("methods: unknown method '" .. m .. "' (minmax, kl, mse, l2_search, quantile)")
    end
    methods[m] = true
end

-- The consuming layer of every tensor (the first one listed, for layer_error).
local consumer = {}
if P.criterion == "layer_error" then
    for _, l in ipairs(qcal.layers()) do consumer[l.input] = consumer[l.input] or l.name end
end

-- ---- observe -------------------------------------------------------------------------------
local tensors = calib.tensors(P)
local pass = qcal.pass()
local observed = {}
for _, t in ipairs(tensors) do
    local o = { tensor = t, spec = calib.spec(P, t) }
    o.hist = pass:observe(t, "histogram", { bins = P.bins, abs = P.symmetric })
    if methods.kl then
        o.abs_hist = P.symmetric and o.hist or pass:observe(t, "histogram", { bins = P.bins, abs = true })
    end
    if methods.l2_search then -- torch's search works on a histogram of x
        o.x_hist = P.symmetric and pass:observe(t, "histogram", { bins = P.bins }) or o.hist
    end
    if methods.quantile then
        o.stats = pass:observe(t, "batch_stats", { unit = "sample", outlier_prob = P.outlier_prob })
    end
    observed[#observed + 1] = o
end
pass:run{ max_rows = P.max_samples }

-- ---- candidates ----------------------------------------------------------------------------
local function candidates_of(o)
    local list = {}
    local function add(method, estimator, stat_id, params)
        local range, note = qcal.estimate(estimator, pass:statistic(stat_id), o.spec, params)
        list[#list + 1] = { method = method, range = range, note = note }
    end
    local has_100 = false
    for _, p in ipairs(percentiles) do
        add(string.format("percentile:%g", p), "percentile", o.hist, { percentile = p })
        has_100 = has_100 or p == 100
    end
    if methods.minmax and not has_100 then add("minmax", "percentile", o.hist, { percentile = 100 }) end
    if methods.kl then
        add("kl", "kl", o.abs_hist, { variant = P.kl_variant, bins = P.bins })
        if not P.symmetric then -- an affine grid need not cover beyond the observed extremes
            local full = qcal.estimate("percentile", pass:statistic(o.hist), o.spec, { percentile = 100 })
            local r = list[#list].range
            r.lo = math.min(math.max(r.lo, full.lo), 0)
            r.hi = math.max(math.min(r.hi, full.hi), 0)
        end
    end
    if methods.mse then add("mse", "mse", o.hist) end
    if methods.l2_search then add("l2_search", "l2_search", o.x_hist) end
    if methods.quantile then add("quantile", "quantile", o.stats, { preset = "quantile" }) end
    return list
end

-- ---- evaluate ------------------------------------------------------------------------------
local ev = qcal.evaluation()
for _, o in ipairs(observed) do
    o.candidates = candidates_of(o)
    local entries = {}
    for k, c in ipairs(o.candidates) do entries[k] = { range = c.range, spec = o.spec } end
    o.layer = consumer[o.tensor.name]
    o.eval = ev:add(o.tensor, entries, o.layer and { layer = o.layer } or nil)
end
ev:run{ max_rows = P.stat_subset_size }

-- ---- choose --------------------------------------------------------------------------------
local function better(a, b, key)
    if b == nil then return true end
    if HIGHER_IS_BETTER[key] then return a > b end
    return a < b
end

for _, o in ipairs(observed) do
    local key = o.layer and "layer_error" or (P.criterion == "layer_error" and "mse" or P.criterion)
    local best, best_value
    for k, e in ipairs(ev:errors(o.eval)) do
        local c = o.candidates[k]
        c.mse, c.sqnr_db, c.cosine, c.layer_error = e.mse, e.sqnr_db, e.cosine, e.layer_error
        if e[key] == e[key] and better(e[key], best_value, key) then best, best_value = k, e[key] end
    end
    local measured = best ~= nil
    best = best or 1
    local c = o.candidates[best]
    local note = string.format("%s %s of %d candidates%s", HIGHER_IS_BETTER[key] and "best" or "least",
                               key, #o.candidates,
                               o.layer and (" (output of layer " .. o.layer .. ")") or "")
    if not measured then -- say so, rather than let the first candidate pass for the best
        note = string.format("no candidate's %s is a number (%d candidates): the first kept", key,
                             #o.candidates)
    end
    if c.note then note = note .. "; " .. c.note end
    qcal.put(o.tensor, { method = "mix:" .. c.method, spec = o.spec, range = c.range, note = note,
                         metrics = { mse = c.mse, sqnr_db = c.sqnr_db, cosine = c.cosine } })
    qcal.candidates(o.tensor, o.candidates, best, key)
end
