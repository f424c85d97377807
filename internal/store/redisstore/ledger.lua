-- ledger.lua applies one batch of client reports, or its part in one shard
-- (shard.go; every key below shares the shard's hash tag): fleet-ledger
-- updates, with each ledger's fleet rate and each report's quota returned,
-- budget usage increments, and the seqs of numbered reports. One script is
-- one round trip, and no replica sees half of it. It is the twin of
-- reservoir.Ledger.Apply, which the embedded store runs; storetest holds
-- both to the same behaviour.
--
-- KEYS[1..L]: one hash per rule: field "<bucket>" = sum of request rates,
-- "q:<bucket>" = sum of quotas granted, "s:<bucket>" = sum of sampled rates,
-- "n:<bucket>" = clients whose latest report is in the bucket, "a:<bucket>"
-- = those of them that run the rule as it is at version "av" (the newest
-- rule version a report named: a newer one starts the counts afresh), "last" =
-- newest bucket a report was written to, "res", "resb", "resf" = the reserve left by an
-- outage, the bucket it was made in and the first bucket it stands for.
-- KEYS[L+1..L+U]: one hash per budget and month of usage, fields "r:<hour>"
-- and "s:<hour>" (requests and sampled in an hour of the month), "rr:<rule>"
-- and "rs:<rule>" (a rule's totals) and "rh:<hour>:<rule>" (a rule's
-- requests in an hour); the fleet's record also "sh:<hour>:<rule>", and
-- two hashes of a rule's month per service, fields "<rule>:<service>".
-- KEYS[L+U+1..L+U+4], if the batch has numbered reports: the hashes of the
-- seqs recorded in the span of time two before the batch's (no longer
-- read), the one before, its own, and the one after; field = client, value
-- = its highest seq.
-- KEYS[N-1]: the shard's fence: the lowest generation of the shard list
-- (reshard.go) whose batches it takes (absent: any).
-- KEYS[N]: this call's own key.
-- ARGV[1] current bucket, ARGV[2] buckets that stay live, ARGV[3] ledger TTL
-- in ms, ARGV[4] L, ARGV[5] the call key's TTL in ms, ARGV[6] the batch's
-- deadline in Redis's clock, unix ms (0: none), ARGV[7] the bucket in which
-- the sending replica lost the store ("": it did not), ARGV[8] U, ARGV[9] C,
-- the number of clients with numbered reports, ARGV[10] the TTL in ms of
-- the hash of the batch's own span, ARGV[11] "1" if some client has more
-- than one report in the batch, else "0"; then the C clients, the highest
-- seq of each one's reports and, if ARGV[11] is "1", the lowest (else it is
-- the highest); then per ledger key,
-- in KEYS order: n and n pairs of bucket and rate delta; n and n pairs of
-- live bucket and quota retracted; n and n pairs of bucket no longer live
-- and quota retracted; n and n pairs of bucket and sampled-rate delta; n
-- and n pairs of bucket and client-count delta; the rule's reservoir, the
-- sum of the rates of the reports that retract a previous claim, the
-- largest of the reports' rates, the sum of the rates of the first reports
-- (no previous claim: reservoir.FirstQuota), the most times its rate a
-- first quota may be (reservoir.FirstQuotaHeadroom), and the number of
-- client reports; the newest rule version of the batch (a read's: the version it
-- asks the count of), n and n triples of bucket, rule version and delta of
-- the clients that run it; then per usage key, in KEYS order: its TTL in ms,
-- the most fields it may hold (0: no limit; a field past it that is not
-- there yet is not added), the number of increments n, then n pairs of
-- field and increment; last, the generation of the shard list the caller
-- laid the batch out by.
--
-- A batch laid out by a generation older than the shard's fence is refused
-- whole: the script changes nothing and returns Redis's clock, "fenced" and
-- the fence; the caller reads the list again and lays the batch out anew.
--
-- Returns Redis's clock (unix ms), "1" if the batch was applied ("0" if it
-- was sent again), then per ledger key the fleet rate, the quotas
-- outstanding before the batch's grants, the fleet's sampled rate, its
-- number of clients, and how many of them run the rule at the batch's
-- rule version or later (0 if the ledger counts an older one). The reports' quotas, granted in
-- order, each its share within what is left, a first report's at most
-- headroom × its rate, add up to min(R × Σ rates / fleet rate +
-- min(R / fleet rate, headroom) × Σ first rates, R − outstanding), which is
-- what the script adds to the ledger; the caller works out each one from the same numbers
-- (reservoir.Grants). A batch past its deadline (the caller gave up
-- on it: Redis was frozen, or the network slow) is refused whole with a
-- STALE error, so that it cannot land after its replica answered without
-- it.
--
-- The last key marks the batch as applied, for ARGV[5] ms: a client that
-- sends the script again (go-redis does after a dropped connection, when the
-- first run may have happened) gets the fleet rates without adding anything
-- twice, and no quota.
--
-- Numbered reports are billed once: if any client's lowest seq is not above
-- the highest recorded for it, in any of the three spans, the script
-- changes nothing and returns Redis's clock, "repeat", then pairs of such a
-- client and its highest seq recorded; the caller sends the batch again
-- without the reports that are not new. Otherwise it records each client's
-- highest seq in the batch's own span, and unlinks the hash of two spans
-- before, which Redis then frees in the background (a hash of a million
-- clients takes it some 0.4 s). The usage of the numbered reports is
-- netted with the rest: the check costs a command per span, not per report.
--
-- The caller has already netted the rates and retractions of the batch into
-- one delta per bucket and one increment per usage field; the work per
-- report is a few operations on numbers.
if redis.replicate_commands then
  redis.replicate_commands() -- Redis 6: TIME before writes
end
local t = redis.call('TIME')
local clock = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = tonumber(ARGV[6])
if deadline > 0 and clock > deadline then
  return redis.error_reply('STALE batch reached Redis after its deadline')
end
local fence = redis.call('GET', KEYS[#KEYS - 1])
if fence and tonumber(fence) > tonumber(ARGV[#ARGV]) then
  return {tostring(clock), 'fenced', fence}
end
local cur = tonumber(ARGV[1])
local retain = tonumber(ARGV[2])
local ttl = ARGV[3]
local nledgers = tonumber(ARGV[4])
local down = tonumber(ARGV[7])
local nusage = tonumber(ARGV[8])
local nclients = tonumber(ARGV[9])
local chunk = 1000 -- values per command, within unpack's limit
local highs = 12 + nclients -- ARGV index of the first highest seq
local lows = highs
if ARGV[11] == '1' then
  lows = highs + nclients
end

-- Numbered reports that are not new, unless this call is a repeat of one
-- that was applied (it adds nothing then).
local spans = nledgers + nusage
if nclients > 0 and redis.call('EXISTS', KEYS[#KEYS]) == 0 then
  local marks = {}
  for w = 2, 4 do
    local key = KEYS[spans + w]
    if redis.call('EXISTS', key) == 1 then
      for i = 1, nclients, chunk do
        local j = math.min(i + chunk - 1, nclients)
        local got = redis.call('HMGET', key, unpack(ARGV, 11 + i, 11 + j))
        for x = 1, #got do
          local m = got[x]
          if m then
            m = tonumber(m)
            local k = i + x - 1
            if not marks[k] or m > marks[k] then
              marks[k] = m
            end
          end
        end
      end
    end
  end
  local out = {tostring(clock), 'repeat'}
  for i, m in pairs(marks) do
    if m >= tonumber(ARGV[lows + i - 1]) then
      table.insert(out, ARGV[11 + i])
      table.insert(out, string.format('%d', m))
    end
  end
  if #out > 2 then
    return out
  end
end

local apply = redis.call('SET', KEYS[#KEYS], '1', 'NX', 'PX', ARGV[5])

local function live(b, at)
  return b <= at + 1 and b > at - retain
end
local function fmt(x)
  return string.format('%.17g', x)
end

local applied = '0'
if apply then
  applied = '1'
end
local out = {tostring(clock), applied}
local a = lows + nclients
for k = 1, nledgers do
  local key = KEYS[k]
  -- The batch's part for this ledger.
  local rates, qret, drains, samp, counts = {}, {}, {}, {}, {}
  for _, list in ipairs({rates, qret, drains, samp, counts}) do
    local n = tonumber(ARGV[a])
    a = a + 1
    for j = 1, n do
      list[j] = {tonumber(ARGV[a]), tonumber(ARGV[a + 1])}
      a = a + 2
    end
  end
  local rmax, rsum, rtop = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local fsum, headroom = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local nclients = tonumber(ARGV[a + 5])
  local versionText = ARGV[a + 6] -- as sent: Lua would print 16 digits in exponent notation
  local version = tonumber(versionText)
  local napplied = tonumber(ARGV[a + 7])
  a = a + 8
  local applies = {}
  for j = 1, napplied do
    applies[j] = {ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])}
    a = a + 3
  end
  -- Anything but reads (no reservoir, no rate, nothing retracted, no
  -- client).
  local writes = apply and (#rates > 0 or #qret > 0 or #drains > 0 or #samp > 0 or rmax > 0 or rsum > 0 or fsum > 0 or nclients > 0)

  -- After an outage that nobody wrote through, what was outstanding before
  -- it becomes the reserve.
  local state = redis.call('HMGET', key, 'last', 'res', 'resb', 'resf', 'av')
  local last = tonumber(state[1])
  local res, resb, resf = tonumber(state[2]) or 0, tonumber(state[3]) or 0, tonumber(state[4])
  local resChanged = false
  if writes and down and rmax > 0 then
    if not last then
      res, resb, resf, resChanged = rmax, cur, nil, true
    elseif last < cur - 1 and last >= down - 1 then
      local held = 0
      for b = last - retain + 1, last + 1 do
        if not live(b, cur) then
          held = held + (tonumber(redis.call('HGET', key, 'q:' .. b)) or 0)
        end
      end
      if res > 0 and live(resb, last) and not live(resb, cur) then
        held = held + res
      end
      res, resb, resf, resChanged = held, cur, last - retain + 1, true
    end
  end
  local reserveLive = res > 0 and live(resb, cur)

  -- A newer version of the rule: the clients counted as running it are
  -- counted afresh (those of live buckets are all there are).
  local av = tonumber(state[5]) or 0
  if writes and version > av then
    for b = cur - retain + 1, cur + 1 do
      redis.call('HDEL', key, 'a:' .. b)
    end
    av = version
    redis.call('HSET', key, 'av', versionText)
  end

  if apply then
    for _, d in ipairs(rates) do
      if d[2] ~= 0 and tonumber(redis.call('HINCRBYFLOAT', key, d[1], fmt(d[2]))) < 0 then
        redis.call('HSET', key, d[1], '0')
      end
    end
    for _, d in ipairs(qret) do
      local f = 'q:' .. d[1]
      if tonumber(redis.call('HINCRBYFLOAT', key, f, fmt(-d[2]))) < 0 then
        redis.call('HSET', key, f, '0')
      end
    end
    for _, d in ipairs(samp) do
      local f = 's:' .. d[1]
      if d[2] ~= 0 and tonumber(redis.call('HINCRBYFLOAT', key, f, fmt(d[2]))) < 0 then
        redis.call('HSET', key, f, '0')
      end
    end
    for _, d in ipairs(counts) do
      local f = 'n:' .. d[1]
      if d[2] ~= 0 and redis.call('HINCRBY', key, f, d[2]) < 0 then
        redis.call('HSET', key, f, '0')
      end
    end
    for _, d in ipairs(applies) do
      local f = 'a:' .. d[1]
      if d[2] == av and d[3] ~= 0 and redis.call('HINCRBY', key, f, d[3]) < 0 then
        redis.call('HSET', key, f, '0')
      end
    end
    if reserveLive then
      for _, d in ipairs(drains) do
        if (resf == nil or d[1] >= resf) and d[1] < resb then
          res = math.max(0, res - d[2])
          resChanged = true
        end
      end
    end
  end

  -- The fleet rate, the quotas outstanding, the sampled rate and the
  -- clients, dropping what aged out.
  local fleet, outstanding, sampled, clients, running = 0, 0, 0, 0, 0
  local all = redis.call('HGETALL', key)
  for j = 1, #all, 2 do
    local f = all[j]
    local b = tonumber(f)
    local kind = nil
    if not b then
      kind = string.sub(f, 1, 2)
      if kind == 'q:' or kind == 's:' or kind == 'n:' or kind == 'a:' then
        b = tonumber(string.sub(f, 3))
      end
    end
    if b then
      if live(b, cur) then
        local v = tonumber(all[j + 1])
        if not kind then
          fleet = fleet + v
        elseif kind == 'q:' then
          outstanding = outstanding + v
        elseif kind == 's:' then
          sampled = sampled + v
        elseif kind == 'n:' then
          clients = clients + v
        else
          running = running + v
        end
      elseif writes then
        redis.call('HDEL', key, f)
      end
    end
  end
  if reserveLive then
    outstanding = outstanding + res
  end

  -- Each report's quota: its share, within what is left of the reservoir
  -- (reservoir.Grants, which the caller runs on the same numbers).
  table.insert(out, fmt(fleet))
  table.insert(out, fmt(outstanding))
  table.insert(out, fmt(sampled))
  table.insert(out, string.format('%d', clients))
  if av < version then
    running = 0 -- the counts are of an older version of the rule
  end
  table.insert(out, string.format('%d', running))
  local granted = 0
  if apply and rmax > outstanding and rsum + fsum > 0 then
    local f = math.max(fleet, rtop)
    local shares = rmax * (rsum / f)
    if fsum > 0 then
      -- First reports: each its share, at most headroom × its rate.
      if rmax / f <= headroom then
        shares = shares + rmax * (fsum / f)
      else
        shares = shares + headroom * fsum
      end
    end
    granted = math.min(shares, rmax - outstanding)
  end

  if writes then
    if granted > 0 then
      redis.call('HINCRBYFLOAT', key, 'q:' .. cur, fmt(granted))
    end
    if not reserveLive and (res > 0 or state[2]) then
      redis.call('HDEL', key, 'res', 'resb', 'resf')
    elseif resChanged then
      redis.call('HSET', key, 'res', fmt(res), 'resb', resb)
      if resf then
        redis.call('HSET', key, 'resf', resf)
      else
        redis.call('HDEL', key, 'resf')
      end
    end
    if not last or last < cur then
      redis.call('HSET', key, 'last', cur)
    end
    redis.call('PEXPIRE', key, ttl)
  end
end
if apply then
  for k = nledgers + 1, nledgers + nusage do
    local key = KEYS[k]
    local keyttl = ARGV[a]
    local limit = tonumber(ARGV[a + 1])
    local n = tonumber(ARGV[a + 2])
    a = a + 3
    for j = 1, n do
      if limit == 0 or redis.call('HLEN', key) < limit or redis.call('HEXISTS', key, ARGV[a]) == 1 then
        redis.call('HINCRBY', key, ARGV[a], ARGV[a + 1])
      end
      a = a + 2
    end
    redis.call('PEXPIRE', key, keyttl)
  end
  if nclients > 0 then
    local key = KEYS[spans + 3]
    for i = 1, nclients, chunk do
      local j = math.min(i + chunk - 1, nclients)
      local fields, f = {}, 0
      for x = i, j do
        fields[f + 1], fields[f + 2], f = ARGV[11 + x], ARGV[highs + x - 1], f + 2
      end
      redis.call('HSET', key, unpack(fields))
    end
    redis.call('PEXPIRE', key, ARGV[10])
    redis.call('UNLINK', KEYS[spans + 1])
  end
end
return out
