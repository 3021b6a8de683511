"""The link's Lua scripts: each runs atomically, which is what makes generations and leases safe."""

from __future__ import annotations

import math

import redis.asyncio as aioredis

from service.cluster.records import MAX_GENERATION, MAX_GENERATION_STEP


def ms(seconds: float) -> int:
    """``seconds`` as the whole milliseconds Redis takes for TTLs (at least 1)."""
    return max(1, math.ceil(seconds * 1000))


# Every script starts with these (see Scripts).  The keys are this link's, but their values
# are input like any other: a key of ours holding another type is dropped (a WRONGTYPE error
# would stop every later write), and a stored number is used only if it is one this link could
# have written.
# Generations are checked as decimal text before they become Lua numbers, and every one kept
# is at most 2**53 - 1, which a Lua number (a double) holds exactly; the increment itself is
# HINCRBY (a Redis integer) and the record quotes the text Redis stored, never a formatted
# double.
_PRELUDE = f"""
local MAX_GENERATION = {MAX_GENERATION}
local MAX_STEP = {MAX_GENERATION_STEP}
local function claim(key, kind)
  local found = redis.call('TYPE', key).ok
  if found ~= 'none' and found ~= kind then redis.call('DEL', key) end
end
local function generation_of(text)
  if type(text) ~= 'string' or #text > 16 or not string.match(text, '^[1-9][0-9]*$') then
    return nil
  end
  local n = tonumber(text)
  if n > MAX_GENERATION then return nil end
  return n
end
local function count_of(text)
  if type(text) ~= 'string' or #text > 12 or not string.match(text, '^[0-9]+$') then
    return 0
  end
  return tonumber(text)
end
"""

# KEYS: state record, lease.  ARGV: record JSON (without generation), floor (the newest
# generation the writer knows, 0 to MAX_GENERATION), mode ("set" or "seed"), record TTL ms,
# channel, replica id, "1" to release this replica's lease.  Returns {generation, written}.
# "set" takes a new generation above everything known; "seed" restores a record Redis lost,
# under the writer's newest known generation, and only if nothing newer is stored.  A stored
# generation that is not one (garbage, or further ahead of the floor than any record may
# move it) is replaced.
PUBLISH = """
claim(KEYS[1], 'hash')
claim(KEYS[2], 'string')
local stored = redis.call('HGET', KEYS[1], 'generation')
local current = generation_of(stored)
local floor = tonumber(ARGV[2])
if current and current > floor + MAX_STEP then current = nil end
if ARGV[3] == 'seed' then
  if current and current >= floor then return {stored, 0} end
  redis.call('HSET', KEYS[1], 'generation', ARGV[2])
else
  if not (current and current > floor) then
    redis.call('HSET', KEYS[1], 'generation', ARGV[2])
  end
  redis.call('HINCRBY', KEYS[1], 'generation', 1)
end
local generation = redis.call('HGET', KEYS[1], 'generation')
local record = '{"generation":' .. generation .. ',' .. string.sub(ARGV[1], 2)
redis.call('HSET', KEYS[1], 'record', record)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if ARGV[7] == '1' and redis.call('GET', KEYS[2]) == ARGV[6] then
  redis.call('DEL', KEYS[2])
end
redis.call('PUBLISH', ARGV[5], record)
return {generation, 1}
"""

# KEYS: lease.  ARGV: replica id, TTL ms.  Returns {granted, ms}: the lease's TTL when granted
# (re-entrant for its holder), the time it has left when refused.
ACQUIRE = """
claim(KEYS[1], 'string')
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, tonumber(ARGV[2])}
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, tonumber(ARGV[2])}
end
return {0, redis.call('PTTL', KEYS[1])}
"""

# KEYS: lease.  ARGV: replica id, TTL ms.  Extends the lease only for its holder.
RENEW = """
claim(KEYS[1], 'string')
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: count bucket.  ARGV: successes, failures, slow calls to add, TTL ms.  A count that is
# not one this link could have written starts again from zero, so a garbage bucket loses only
# its own garbage.  One script per bucket: no bucket is ever left without its TTL.
ADD = """
claim(KEYS[1], 'hash')
local fields = {'s', 'f', 'w'}
for index, field in ipairs(fields) do
  if ARGV[index] ~= '0' then
    local stored = redis.call('HGET', KEYS[1], field)
    if stored and stored ~= '0' and count_of(stored) == 0 then
      redis.call('HDEL', KEYS[1], field)
    end
    redis.call('HINCRBY', KEYS[1], field, ARGV[index])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS: count buckets.  Returns the sums {successes, failures, slow}; a bucket or a count
# that is not one this link could have written counts as nothing.
SUM = """
local s, f, w = 0, 0, 0
for _, key in ipairs(KEYS) do
  if redis.call('TYPE', key).ok == 'hash' then
    local v = redis.call('HMGET', key, 's', 'f', 'w')
    s = s + count_of(v[1])
    f = f + count_of(v[2])
    w = w + count_of(v[3])
  end
end
return {s, f, w}
"""


class Scripts:
    """The scripts, registered on one client (one per connection attempt)."""

    __slots__ = ("acquire", "add", "publish", "renew", "sum")

    def __init__(self, client: aioredis.Redis) -> None:
        self.publish = client.register_script(_PRELUDE + PUBLISH)
        self.acquire = client.register_script(_PRELUDE + ACQUIRE)
        self.renew = client.register_script(_PRELUDE + RENEW)
        self.add = client.register_script(_PRELUDE + ADD)
        self.sum = client.register_script(_PRELUDE + SUM)
