"""The Lua scripts of the Redis backend's writes: each writes or deletes one record atomically,
so a record is never half written, whatever happens to the client or the server mid-batch."""

from __future__ import annotations

from typing import Any

__all__ = ["DELETE", "DELETE_IF_OLDER", "Eval", "HMGET_MANY", "PRUNE_CHANGE", "PUT_IF_NEWER", "TRIM_TOMBSTONES", "UPSERT"]


class Eval:
    """A script sent whole with ``EVAL`` on every call, called like redis-py's registered
    script (``await script(keys=[...], args=[...], client=pipe)``). For a Redis Cluster: a
    pipeline there cannot load a script a node has not seen (``EVALSHA`` fails with
    ``NOSCRIPT`` on a new or failed-over node), while ``EVAL`` always runs; Redis caches the
    compiled script by its SHA either way. On a pipeline the call queues the command (its reply
    comes from ``execute``) and returns ``None``."""

    def __init__(self, text: str) -> None:
        self.text = text

    async def __call__(self, keys: list[Any], args: list[Any], client: Any) -> Any:
        from redis.asyncio.cluster import ClusterPipeline

        if isinstance(client, ClusterPipeline):
            client.eval(self.text, len(keys), *keys, *args)
            return None
        return await client.eval(self.text, len(keys), *keys, *args)


# Upsert of one record hash (KEYS[1]) that keeps a stored created_at. ARGV[1]: pexpire ms (0:
# none); ARGV[2]: a JSON array [field, value, ...] starting with created_at_us and created_at (one
# argument instead of two dozen: packing arguments is most of redis-py's client-side cost; an
# array keeps the fields in a fixed order); ARGV[3]: the float32 vector bytes, or empty (binary,
# so not inside the JSON). The key is scored in the change log KEYS[2] (a sorted set of record
# keys by the server's time of their last write, in µs: the order export reads). A stored created_at
# is kept only when both its fields are numbers; a key of another type is replaced. Returns the
# created_at_us the record has now.
UPSERT = """
local fields = cjson.decode(ARGV[2])
local old = redis.pcall('HMGET', KEYS[1], 'created_at_us', 'created_at')
if type(old) == 'table' and old.err == nil and old[1] and old[2]
    and string.match(old[1], '^%-?%d+$') and string.match(old[2], '^%-?%d+%.?%d*$') then
  fields[2] = old[1]; fields[4] = old[2]
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(fields))
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'vector', ARGV[3]) end
if tonumber(ARGV[1]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2])), KEYS[1])
return fields[2]
"""

# Last-writer-wins write of one record hash (KEYS[1]); KEYS[2] is the hash of deletes' times (a
# version not newer than a delete of the record is not written), KEYS[3] the change log (scored
# with the server's time now, not updated_at: a late write still comes after what export read). ARGV[1]: updated_at_us; ARGV[2]: pexpire ms
# (0: none); ARGV[3]: the JSON field array; ARGV[4]: vector bytes or empty. An equal updated_at
# rewrites, so replays are idempotent; a stored version whose updated_at is not a number (damaged)
# or a key of another type is replaced.
PUT_IF_NEWER = """
local current = redis.pcall('HGET', KEYS[1], 'updated_at_us')
if type(current) == 'string' and string.match(current, '^%-?%d+$')
    and tonumber(current) > tonumber(ARGV[1]) then return 0 end
local deleted = redis.call('HGET', KEYS[2], KEYS[1])
if deleted and tonumber(deleted) >= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(cjson.decode(ARGV[3])))
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'vector', ARGV[4]) end
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[3], string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2])), KEYS[1])
return 1
"""

# Delete the hash KEYS[1] unless it was written after ARGV[1] (microseconds since the epoch), and
# when ARGV[2] is '1' remember the delete: its time in the hash KEYS[3] (the later one wins) and
# the key in the tombstone sorted set KEYS[2], scored with the server's time now ('0' when a
# restored version expired on arrival, which is no delete). A
# stored updated_at that is not a number counts as older; a key of another type is left alone
# (`memory-primitives repair` moves it aside).
DELETE_IF_OLDER = """
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'hash' and kind ~= 'none' then return 0 end
local current = redis.call('HGET', KEYS[1], 'updated_at_us')
if current and string.match(current, '^%-?%d+$') and tonumber(current) > tonumber(ARGV[1]) then return 0 end
if ARGV[2] == '1' then
  local known = redis.call('HGET', KEYS[3], KEYS[1])
  if not known or tonumber(known) < tonumber(ARGV[1]) then
    redis.call('HSET', KEYS[3], KEYS[1], ARGV[1])
    local t = redis.call('TIME')
    redis.call('ZADD', KEYS[2], string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2])), KEYS[1])
  end
end
return redis.call('DEL', KEYS[1])
"""

# Delete the hash KEYS[1] now (ARGV[1]: microseconds since the epoch) and remember the delete:
# its time in the hash KEYS[3], the key in the tombstone sorted set KEYS[2] scored with the
# server's time. Returns 1 when a record was there.
DELETE = """
redis.call('HSET', KEYS[3], KEYS[1], ARGV[1])
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2])), KEYS[1])
return redis.call('DEL', KEYS[1])
"""

# Forget deletes that arrived before ARGV[1] (µs): their keys leave the tombstone sorted set
# KEYS[1] and the hash of deletes' times KEYS[2], at most 1,000 a call.
TRIM_TOMBSTONES = """
local old = redis.call('ZRANGE', KEYS[1], '-inf', '(' .. ARGV[1], 'BYSCORE', 'LIMIT', 0, 1000)
for _, key in ipairs(old) do redis.call('HDEL', KEYS[2], key) end
if #old > 0 then redis.call('ZREM', KEYS[1], unpack(old)) end
return #old
"""

# Drop change-log entry KEYS[2] member KEYS[1] when the record is gone (expired) and the entry
# still has score ARGV[1] (a write since then moved it: keep that one).
PRUNE_CHANGE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local score = redis.call('ZSCORE', KEYS[2], KEYS[1])
if score and score == ARGV[1] then return redis.call('ZREM', KEYS[2], KEYS[1]) end
return 0
"""

# HMGET of the fields ARGV on every key of KEYS, in one reply (an export page: one command instead
# of one per record, which redis-py packs and parses one by one). A key of another type gives 0.
HMGET_MANY = """
local out = {}
for i, key in ipairs(KEYS) do
  local values = redis.pcall('HMGET', key, unpack(ARGV))
  if type(values) == 'table' and values.err then out[i] = 0 else out[i] = values end
end
return out
"""
