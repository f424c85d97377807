-- states.lua stores budget decisions: per budget, the given decision replaces
-- the stored one unless the stored one is newer (its order string sorts
-- after the given one's), so that a decision made for an older budget, or
-- earlier, never replaces a newer one. A decision that stays is also its
-- hour's point of the budget's history. With pruning (a controller
-- interval's whole set), the decisions of budgets absent from the set are
-- removed unless computed after the latest of the set. As one script, a
-- concurrent write cannot land between the comparison and the write.
--
-- KEYS[1] hash: budget name -> decision JSON
-- KEYS[2] hash: budget name -> order string (record.StateOrder)
-- KEYS[3..] hash: the history of each given decision's budget month, field
--         the hour, in the order of the decisions (a placeholder key of the
--         same tag when a decision has no point)
-- ARGV[1] "1" to prune, "0" not to
-- ARGV[2] the latest computation of the set, as in an order string
-- ARGV[3] change notification channel
-- ARGV[4] the number of decisions, then per decision six values: name,
--         order string, JSON, history hour ("" for no point), point JSON,
--         history TTL in milliseconds
--
-- An order string is three fixed-width fields "created|revision|computed";
-- characters 41 to 59 are when the decision was computed. A decision stored
-- without an order string is older than any.
--
-- Returns the number of given decisions that were stored.

local n = tonumber(ARGV[4])
local given = {}
local stored = 0
for i = 0, n - 1 do
  local base = 5 + i * 6
  local name, order = ARGV[base], ARGV[base + 1]
  given[name] = true
  local old = redis.call('HGET', KEYS[2], name)
  if not old or old <= order then
    redis.call('HSET', KEYS[1], name, ARGV[base + 2])
    redis.call('HSET', KEYS[2], name, order)
    if ARGV[base + 3] ~= '' then
      redis.call('HSET', KEYS[3 + i], ARGV[base + 3], ARGV[base + 4])
      redis.call('PEXPIRE', KEYS[3 + i], ARGV[base + 5])
    end
    stored = stored + 1
  end
end
if ARGV[1] == '1' then
  local names = redis.call('HKEYS', KEYS[1])
  for _, name in ipairs(names) do
    if not given[name] then
      local old = redis.call('HGET', KEYS[2], name)
      if n == 0 or not old or string.sub(old, 41, 59) <= ARGV[2] then
        redis.call('HDEL', KEYS[1], name)
        redis.call('HDEL', KEYS[2], name)
      end
    end
  end
  -- Order strings of decisions no longer stored.
  for _, name in ipairs(redis.call('HKEYS', KEYS[2])) do
    if redis.call('HEXISTS', KEYS[1], name) == 0 then
      redis.call('HDEL', KEYS[2], name)
    end
  end
end
redis.call('PUBLISH', ARGV[3], 'budgets')
return stored
