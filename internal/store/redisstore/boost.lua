-- boost.lua records a batch of boost statistics: each rule's anomaly counts
-- added to its State (the twin of boost.State.Record, which the in-memory
-- store runs; the Go test holds both to the same numbers), and every rule's
-- State returned, in one round trip.
--
-- KEYS[1..n]: one hash per rule, under the store's hash tag; a rule may
-- appear more than once (its adds apply in order). Fields: "b" the newest
-- bucket counted (absent: no counts yet), "since" the first; "t0" "a0"
-- "s0" the newest bucket's total, anomalies and sampled anomalies; "t1"
-- "a1" "s1" the bucket before's; "bt" "ba" "bs" the baseline's decayed
-- sums; "rate" "start" "exp" the last boost (unix ms) and "cap" what it
-- captured.
-- KEYS[n+1]: this call's own key: a call sent again (go-redis does after a
-- dropped connection) adds nothing twice.
-- ARGV[1] the bucket of now, ARGV[2] the decay per bucket, ARGV[3] the
-- hashes' TTL in ms, ARGV[4] now in unix ms, ARGV[5] the call key's TTL in
-- ms; then per rule, in KEYS order, its total, anomalies and sampled
-- anomalies, already cleaned by the caller. A rule with three zeros is read,
-- not written.
--
-- Returns per rule, in KEYS order, the 15 fields above in that order,
-- false for those absent.
local fields = {'b', 'since', 't0', 'a0', 's0', 't1', 'a1', 's1', 'bt', 'ba', 'bs', 'rate', 'start', 'exp', 'cap'}
local n = #KEYS - 1
local bucket = tonumber(ARGV[1])
local decay = tonumber(ARGV[2])
local ttl = ARGV[3]
local now = tonumber(ARGV[4])
local again = redis.call('EXISTS', KEYS[n + 1]) == 1

local maxCount = 1e15
local function count(x)
  if not (x > 0) then return 0 end
  if x > maxCount then return maxCount end
  return x
end
-- clean maps sums to what the model reads, as boost.Counts.clean.
local function clean(t, a, s)
  t = count(t)
  a = math.min(count(a), t)
  s = math.min(count(s), a)
  return t, a, s
end
local function pow(n)
  if n < 0 or not (decay > 0) or decay > 1 then return 0 end
  return decay ^ n
end
local function num(x)
  return string.format('%.17g', x)
end

local out = {}
for i = 1, n do
  local key = KEYS[i]
  local t = tonumber(ARGV[5 + 3 * i - 2])
  local a = tonumber(ARGV[5 + 3 * i - 1])
  local s = tonumber(ARGV[5 + 3 * i])
  local h = redis.call('HMGET', key, unpack(fields))
  if not again and (t > 0 or a > 0 or s > 0) then
    local v = {}
    for j = 3, 11 do v[j] = tonumber(h[j]) or 0 end
    local b, since = tonumber(h[1]), tonumber(h[2])
    if not b then
      b, since = bucket, bucket
      for j = 3, 11 do v[j] = 0 end
    end
    -- Advance to bucket (boost.State.Advance).
    if bucket > b then
      local g = bucket - b
      if g == 1 then
        v[9], v[10], v[11] = clean(v[9] * decay + v[6], v[10] * decay + v[7], v[11] * decay + v[8])
        v[6], v[7], v[8] = v[3], v[4], v[5]
      else
        local d0, d1, d2 = pow(g), pow(g - 1), pow(g - 2)
        v[9], v[10], v[11] = clean(v[9] * d0 + v[6] * d1 + v[3] * d2, v[10] * d0 + v[7] * d1 + v[4] * d2, v[11] * d0 + v[8] * d1 + v[5] * d2)
        v[6], v[7], v[8] = 0, 0, 0
      end
      v[3], v[4], v[5] = 0, 0, 0
      b = bucket
    end
    -- Add (boost.State.Add): the replica's bucket may be behind the newest.
    local age = b - bucket
    if age == 0 then
      v[3], v[4], v[5] = v[3] + t, v[4] + a, v[5] + s
    elseif age == 1 then
      v[6], v[7], v[8] = v[6] + t, v[7] + a, v[8] + s
    else
      local w = pow(age - 2)
      v[9], v[10], v[11] = clean(v[9] + t * w, v[10] + a * w, v[11] + s * w)
    end
    since = math.min(since, bucket)
    h[1], h[2] = num(b), num(since)
    for j = 3, 11 do h[j] = num(v[j]) end
    -- The boost in force captures the sampled anomalies.
    local rate, start, exp = tonumber(h[12]) or 0, tonumber(h[13]) or 0, tonumber(h[14]) or 0
    local last = 11
    if rate > 0 and now >= start and now < exp then
      h[15] = num(count((tonumber(h[15]) or 0) + s))
      last = 15
    end
    local sets = {}
    for j = 1, last do
      if j <= 11 or j == 15 then
        sets[#sets + 1] = fields[j]
        sets[#sets + 1] = h[j]
      end
    end
    redis.call('HSET', key, unpack(sets))
    redis.call('PEXPIRE', key, ttl)
  end
  for j = 1, #fields do out[#out + 1] = h[j] end
end
if not again then
  redis.call('SET', KEYS[n + 1], '1', 'PX', ARGV[5])
end
return out
