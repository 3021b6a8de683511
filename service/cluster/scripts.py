"""The link's Lua scripts: each runs atomically, which is what makes generations and leases safe."""

from __future__ import annotations

import math

import redis.asyncio as aioredis


def ms(seconds: float) -> int:
    """``seconds`` as the whole milliseconds Redis takes for TTLs (at least 1)."""
    return max(1, math.ceil(seconds * 1000))


# KEYS: state record, lease.  ARGV: record JSON (without generation), floor, mode ("set" or
# "seed"), record TTL ms, channel, replica id, "1" to release this replica's lease.
# "set" takes a new generation above everything known; "seed" restores a record Redis lost,
# under the writer's newest known generation, and only if nothing newer is stored.
PUBLISH = """
local current = tonumber(redis.call('HGET', KEYS[1], 'generation')) or 0
local floor = tonumber(ARGV[2])
local generation
if ARGV[3] == 'seed' then
  if current >= floor then return {current, 0} end
  generation = floor
else
  generation = math.max(current, floor) + 1
end
local record = '{"generation":' .. string.format('%d', generation) .. ',' .. string.sub(ARGV[1], 2)
redis.call('HSET', KEYS[1], 'generation', generation, 'record', record)
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
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: count buckets.  Returns the sums {successes, failures, slow}.
SUM = """
local s, f, w = 0, 0, 0
for _, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 's', 'f', 'w')
  s = s + (tonumber(v[1]) or 0)
  f = f + (tonumber(v[2]) or 0)
  w = w + (tonumber(v[3]) or 0)
end
return {s, f, w}
"""


class Scripts:
    """The scripts, registered on one client (one per connection attempt)."""

    __slots__ = ("acquire", "publish", "renew", "sum")

    def __init__(self, client: aioredis.Redis) -> None:
        self.publish = client.register_script(PUBLISH)
        self.acquire = client.register_script(ACQUIRE)
        self.renew = client.register_script(RENEW)
        self.sum = client.register_script(SUM)
