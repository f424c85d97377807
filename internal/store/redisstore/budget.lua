-- budget.lua applies one budget edit and publishes it: the existence and
-- revision checks, the write and the change notification run as one step,
-- so two replicas editing one budget cannot both win.
--
-- KEYS[1] hash: budget name -> budget JSON
-- KEYS[2] string: this call's own key, set once the edit is applied, so
--         that the same call sent again (go-redis does after a read
--         timeout) answers 0 instead of "already exists" or a conflict
-- ARGV[1] op: create, update or delete
-- ARGV[2] budget name
-- ARGV[3] create, update: the budget's new JSON
-- ARGV[4] update: the budget's JSON as the caller read it
-- ARGV[5] update, delete: the revision the caller expects; for delete 0
--         means any
-- ARGV[6] change notification channel
-- ARGV[7] how long KEYS[2] is kept, in milliseconds
--
-- Returns {status}: 0 done, 1 not found, 2 already exists, 3 revision
-- conflict, 4 replaced since the caller read it at the same revision
-- (deleted and created again), so read it again.

local OK, NOT_FOUND, EXISTS, CONFLICT, CHANGED = 0, 1, 2, 3, 4
local op, name, new, read = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local if_rev = tonumber(ARGV[5])

if redis.call('EXISTS', KEYS[2]) == 1 then return {OK} end

local cur = redis.call('HGET', KEYS[1], name)
if op == 'create' then
  if cur then return {EXISTS} end
else
  if not cur then return {NOT_FOUND} end
  local rev = cjson.decode(cur).revision
  if op == 'update' then
    if rev ~= if_rev then return {CONFLICT} end
    if cur ~= read then return {CHANGED} end
  elseif op == 'delete' then
    if if_rev ~= 0 and rev ~= if_rev then return {CONFLICT} end
  else
    return redis.error_reply('budget.lua: unknown op ' .. op)
  end
end

if op == 'delete' then
  redis.call('HDEL', KEYS[1], name)
else
  redis.call('HSET', KEYS[1], name, new)
end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[7])
redis.call('PUBLISH', ARGV[6], 'budgets')
return {OK}
