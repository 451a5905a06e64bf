-- The body of a measurement variant (not shipped): a TTL view's values through one MGET per chunk,
-- the comparison in Lua, then SET … PX per winner and PEXPIRE per kept value; benchmarks put the
-- shipped script's head before it (write_script_cost.variant).
local now = tonumber(ARGV[5])
local ttl = tonumber(ARGV[6])
local written, kept, expired = 0, 0, 0
if mode == 'f' then
  if ttl > 0 then
    for i = 1, n do
      local key, px = KEYS[i + 2], ARGV[i + 6 + n]
      if px ~= '-' then
        call('SET', key, ARGV[i + 6], 'PX', px)
        written = written + 1
      else
        call('UNLINK', key)
        expired = expired + 1
      end
    end
  else
    local pairs_ = {}
    for lo = 1, n, CHUNK do
      local m = 0
      for i = lo, min(n, lo + CHUNK - 1) do
        pairs_[m + 1] = KEYS[i + 2]
        pairs_[m + 2] = ARGV[i + 6]
        m = m + 2
      end
      call('MSET', unpack(pairs_, 1, m))
    end
    written = n
  end
  return {written, kept, expired, ledger_ok}
end
local fields, byte, floor = struct.unpack, string.byte, math.floor
-- The stored value's event time when it is newer than `new` (it stays), else nil. The same bytes
-- (a rerun) are the same pair, so the write stands; a value of another layout is replaced.
local function stays(old, new)
  if old == new or byte(old, 1) ~= 1 then return nil end
  local oev, ocr = fields('<i8i8', old, 2)
  local nev, ncr = fields('<i8i8', new, 2)
  if oev > nev or (oev == nev and ocr > ncr) then return oev end
  return nil
end
local mine = {}  -- key → the value this call wrote (a key given twice meets its first value)
local pairs_ = {}
for lo = 1, n, CHUNK do
  local hi = min(n, lo + CHUNK - 1)
  local olds = call('MGET', unpack(KEYS, lo + 2, hi + 2))
  local m = 0
  for i = lo, hi do
    local key, new = KEYS[i + 2], ARGV[i + 6]
    local px = ttl > 0 and ARGV[i + 6 + n]  -- "-": expired (live while event >= now - ttl, inclusive)
    if px == '-' then
      expired = expired + 1
    else
      local old = olds[i - lo + 1]
      local oev = old and stays(old, new)
      if oev then
        kept = kept + 1
        if px then call('PEXPIRE', key, math.max(1, floor((oev + ttl - now) / 1000))) end
      else
        written = written + 1
        if px then
          call('SET', key, new, 'PX', px)
        else
          pairs_[m + 1] = key
          pairs_[m + 2] = new
          m = m + 2
        end
      end
    end
  end
  if m > 0 then call('MSET', unpack(pairs_, 1, m)) end
end
return {written, kept, expired, ledger_ok}
