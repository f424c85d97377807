-- ledger.lua applies one batch of client reports: fleet-ledger deltas, with
-- each ledger's sum returned, and budget usage increments, those of numbered
-- reports only if they are new. One script is one round trip, and no
-- replica sees half a batch.
--
-- KEYS[1..L]: one hash per rule, field = bucket index, value = sum of rates.
-- KEYS[L+1..L+U]: one hash per budget and month of usage, fields "r:<hour>"
-- and "s:<hour>" (requests and sampled in an hour of the month) and
-- "rr:<rule>" and "rs:<rule>" (a rule's totals).
-- KEYS[L+U+1..L+U+G]: per numbered report, its client's highest recorded
-- seq.
-- KEYS[N]: this call's own key.
-- ARGV[1] current bucket, ARGV[2] buckets that stay live, ARGV[3] ledger TTL
-- in ms, ARGV[4] L, ARGV[5] the call key's TTL in ms, ARGV[6] U, ARGV[7] G,
-- ARGV[8] the seq keys' TTL in ms; then per ledger key, in KEYS order: the
-- number of deltas n, then n pairs of bucket and delta; then per usage key,
-- in KEYS order, its TTL in ms; then G + 1 groups of usage increments: the
-- usage applied unconditionally, then one per numbered report, which starts
-- with the report's seq. A group is the number of increments n, then n
-- triples of usage key (1..U), field and increment.
--
-- The last key marks the batch as applied, for ARGV[5] ms: a client that
-- sends the script again (go-redis does after a read timeout, when the first
-- run may have happened) gets the sums without adding anything twice. A
-- numbered report is applied only if its seq is above its client's, which
-- it then replaces: a report that an SDK sends again, to any replica,
-- because its acknowledgement was lost, is billed once. The seq key lives
-- ARGV[8] ms after the client's last report, new or repeated.
--
-- The caller has already netted the increments of each group, and the
-- script nets the groups it applies, so the writes here do not grow with
-- the number of reports. Seqs are below 2^53, exact as Lua numbers.
local cur = tonumber(ARGV[1])
local oldest = cur - tonumber(ARGV[2]) + 1
local ttl = ARGV[3]
local nledgers = tonumber(ARGV[4])
local nusage = tonumber(ARGV[6])
local ngroups = tonumber(ARGV[7])
local seqttl = ARGV[8]
local apply = redis.call('SET', KEYS[#KEYS], '1', 'NX', 'PX', ARGV[5])
local a = 9
local sums = {}
for k = 1, nledgers do
  local key = KEYS[k]
  local n = tonumber(ARGV[a])
  a = a + 1
  for j = 1, n do
    local b = ARGV[a]
    if apply then
      local left = tonumber(redis.call('HINCRBYFLOAT', key, b, ARGV[a + 1]))
      if left < 0 then
        redis.call('HSET', key, b, '0')
      end
    end
    a = a + 2
  end
  local all = redis.call('HGETALL', key)
  local sum = 0
  for j = 1, #all, 2 do
    local b = tonumber(all[j])
    -- Live as reservoir.Ledger.Live: the next bucket too, for replicas
    -- whose clocks run a little ahead.
    if b >= oldest and b <= cur + 1 then
      sum = sum + tonumber(all[j + 1])
    else
      redis.call('HDEL', key, all[j])
    end
  end
  redis.call('PEXPIRE', key, ttl)
  sums[k] = string.format('%.17g', sum)
end
if apply then
  local usagettl = {}
  for k = 1, nusage do
    usagettl[k] = ARGV[a]
    a = a + 1
  end
  -- net[k][field]: the increments of the groups applied, per usage key.
  local net = {}
  for g = 0, ngroups do
    local take = true
    if g > 0 then
      local key = KEYS[nledgers + nusage + g]
      local seq = tonumber(ARGV[a])
      a = a + 1
      if seq > tonumber(redis.call('GET', key) or '0') then
        redis.call('SET', key, ARGV[a - 1], 'PX', seqttl)
      else
        take = false
        redis.call('PEXPIRE', key, seqttl)
      end
    end
    local n = tonumber(ARGV[a])
    a = a + 1
    if take then
      for j = 1, n do
        local k = tonumber(ARGV[a])
        local f = net[k]
        if not f then
          f = {}
          net[k] = f
        end
        f[ARGV[a + 1]] = (f[ARGV[a + 1]] or 0) + tonumber(ARGV[a + 2])
        a = a + 3
      end
    else
      a = a + 3 * n
    end
  end
  for k, f in pairs(net) do
    local key = KEYS[nledgers + k]
    for field, n in pairs(f) do
      -- %d: a sum past 1e14 would otherwise be written in exponent form.
      redis.call('HINCRBY', key, field, string.format('%d', n))
    end
    redis.call('PEXPIRE', key, usagettl[k])
  end
end
return sums
