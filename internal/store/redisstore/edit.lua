-- edit.lua applies one rule edit together with everything that must agree
-- with it: the rule's audit entries, the rules version bump and the change
-- notification. Running as one script, no replica can see an edit without
-- its audit entry, or a version that does not match the rules.
--
-- KEYS[1] hash: rule name -> rule JSON
-- KEYS[2] counter: rules version
-- KEYS[3] stream: audit log of all rules
-- KEYS[4] stream: audit log of this rule (same entry IDs as KEYS[3])
-- KEYS[5] string: this call's own key (see below)
-- ARGV[1] op: create, update or delete
-- ARGV[2] rule name
-- ARGV[3] create, update: the rule's new JSON, without its rules version,
--         which the script appends (record.MarshalRuleForScript)
-- ARGV[4] update: the rule's JSON as the caller read it
-- ARGV[5] update, delete: the revision the caller expects; for delete 0
--         means any
-- ARGV[6] actor
-- ARGV[7] time of the edit (RFC 3339)
-- ARGV[8] audit entries to keep per stream (trimmed approximately)
-- ARGV[9] change notification channel
-- ARGV[10] how long KEYS[5] is kept, in milliseconds
-- ARGV[11] create: the most rules KEYS[1] may hold, or 0 for no limit (the
--          Default rule's seed). Counted here, in the create's own atomic
--          step, so creates on any number of replicas never pass it.
-- ARGV[12] the version of a first edit, when KEYS[2] does not exist (a new
--          Redis, or one that lost its data): from the clock, so that no
--          version is handed out twice
--
-- Returns {0, version, entry id} on success, or {status}: 1 not found,
-- 2 already exists, 3 revision conflict, 4 replaced since the caller read it
-- at the same revision (deleted and created again), so read it again, 5 the
-- rule limit is reached.
--
-- An edit that was applied marks KEYS[5] with its answer: a client that
-- sends the script again (go-redis does after a read timeout, when the first
-- run may have happened) gets that answer instead of "already exists" or a
-- conflict with its own edit.

local OK, NOT_FOUND, EXISTS, CONFLICT, CHANGED, LIMIT = 0, 1, 2, 3, 4, 5
local op, name, new, read = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local if_rev = tonumber(ARGV[5])

local done = redis.call('GET', KEYS[5])
if done then
  local version, id = string.match(done, '^(%d+) (.+)$')
  return {OK, tonumber(version), id}
end

local cur = redis.call('HGET', KEYS[1], name)
if op == 'create' then
  if cur then return {EXISTS} end
  local limit = tonumber(ARGV[11])
  if limit > 0 and redis.call('HLEN', KEYS[1]) >= limit then return {LIMIT} end
else
  if not cur then return {NOT_FOUND} end
  local rev = cjson.decode(cur).revision
  if op == 'update' then
    if rev ~= if_rev then return {CONFLICT} end
    -- The caller built the new rule from what it read (its create time);
    -- anything else at this revision is a different incarnation.
    if cur ~= read then return {CHANGED} end
  elseif op == 'delete' then
    if if_rev ~= 0 and rev ~= if_rev then return {CONFLICT} end
  else
    return redis.error_reply('edit.lua: unknown op ' .. op)
  end
end

if redis.call('INCR', KEYS[2]) == 1 then
  redis.call('SET', KEYS[2], ARGV[12])
end
-- Kept as a string: Lua's numbers would print a 16-digit version in
-- exponent notation.
local version = redis.call('GET', KEYS[2])
if op == 'delete' then
  redis.call('HDEL', KEYS[1], name)
else
  new = string.sub(new, 1, -2) .. ',"rules_version":' .. version .. '}'
  redis.call('HSET', KEYS[1], name, new)
end

local entry = {'rule', name, 'action', op, 'actor', ARGV[6], 'time', ARGV[7], 'version', version}
if cur then
  table.insert(entry, 'before')
  table.insert(entry, cur)
end
if op ~= 'delete' then
  table.insert(entry, 'after')
  table.insert(entry, new)
end
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[8], '*', unpack(entry))
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[8], id, unpack(entry))
redis.call('SET', KEYS[5], version .. ' ' .. id, 'PX', ARGV[10])
redis.call('PUBLISH', ARGV[9], 'rules')
return {OK, tonumber(version), id}
