-- feature_layer online layout v1: fenced, ledgered writes; an older value never wins.
--
-- Every call is one request of one materialization run:
--   KEYS[1]  the view's fence key (the largest fencing token that claimed the view)
--   KEYS[2]  the run's ledger (a bitmap: bit 0 set by the claim, bit s by request s)
--   KEYS[3…] data keys (modes w, u, f, d) or marker keys (mode c)
--   ARGV[1]  mode: w write, u write distinct keys, f force-write (full refresh), d delete,
--            a claim, t touch, c commit
--   ARGV[2]  the run's fencing token; ARGV[3] its lease expiry (us since epoch, 0 = none);
--   ARGV[4]  the request's ledger bit s (0 = none)
-- A token smaller than the fence, or a lease already expired by the server's clock (TIME), is
-- refused with a FENCED / LEASE_EXPIRED error before anything is written: a run that lost its
-- lease cannot write a single value. Each write/delete sets its ledger bit in the same atomic
-- script, so a snapshot, an AOF or a replica holds a value exactly when it holds its bit: a
-- ledger missing acknowledged bits at commit means acknowledged writes were lost.
--
-- w / u / f: ARGV[5] writer clock (us), ARGV[6] TTL in us (0 = none), ARGV[6 + i] the value of
-- KEYS[2 + i] (u8 version | i64 event_us | i64 created_us | …), with a TTL ARGV[6 + n + i] its
-- PX in ms computed by the writer (max(1, ceil((event_us + ttl - clock) / 1000))), or "-" when
-- the value is already expired (not written). w keeps the stored value when its (event_us,
-- created_us) is newer, as if the keys were written one by one (a key given twice meets the value
-- written first). With a TTL: one SET … PX … GET per key, the rare older case put back with its
-- own expiry. Without: per chunk of keys one MGET, the comparison here, one MSET of the winners
-- (a key holding another type than a string is replaced; SET … GET refused it with WRONGTYPE).
-- u is w for a call whose keys are distinct (the caller guarantees it: one row per entity): it
-- need not track what it wrote, and writes a chunk of new keys with one MSETNX. f (a full
-- refresh) replaces whatever is stored and unlinks keys whose value expired. Returns
-- {written, kept_newer, expired, ledger_ok}.
-- d: unlinks KEYS[3…]; returns {deleted, 0, 0, ledger_ok}.
-- a: sets the fence to the token, creates the ledger (bit 0) with PX ARGV[5] ms.
-- t: renews the ledger's PX (ARGV[5] ms); returns 1, or 0 when the ledger is gone.
-- c: checks that the ledger holds exactly ARGV[5] bits, then sets each marker KEYS[2 + i] to
--    ARGV[5 + i]; a LOST error (nothing set) otherwise.
local call = redis.call
local mode = ARGV[1]
local token = tonumber(ARGV[2])
local fence = call('GET', KEYS[1])
if fence and tonumber(fence) > token then
  return redis.error_reply('FENCED token ' .. token .. ' < fence ' .. fence)
end
local lease = tonumber(ARGV[3])
if lease > 0 then
  local t = call('TIME')
  local late = tonumber(t[1]) * 1000000 + tonumber(t[2]) - lease
  if late > 0 then
    return redis.error_reply('LEASE_EXPIRED ' .. late)
  end
end
local ledger = KEYS[2]
if mode == 'a' then
  call('SET', KEYS[1], ARGV[2])
  call('SETBIT', ledger, 0, 1)
  call('PEXPIRE', ledger, ARGV[5])
  return 1
end
if mode == 't' then
  return call('PEXPIRE', ledger, ARGV[5])
end
if mode == 'c' then
  local bits = call('BITCOUNT', ledger)
  if bits ~= tonumber(ARGV[5]) then
    return redis.error_reply('LOST ledger holds ' .. bits .. ' of ' .. ARGV[5])
  end
  for i = 3, #KEYS do
    call('SET', KEYS[i], ARGV[i + 3])
  end
  return 1
end
local seq = tonumber(ARGV[4])
local ledger_ok = 1
if seq > 0 then
  if call('EXISTS', ledger) == 1 then
    call('SETBIT', ledger, seq, 1)
  else
    ledger_ok = 0  -- flushed, evicted or expired: this run can no longer prove its writes
  end
end
local n = #KEYS - 2
-- Keys per MGET / MSET / MSETNX / UNLINK: unpack() returns at most LUAI_MAXCSTACK (8000) values,
-- and an MSET takes two per key. PROBE: the first chunk of a write without TTL.
local CHUNK, PROBE = 3000, 100
local unpack, min = unpack, math.min
if mode == 'd' then
  local deleted = 0
  for lo = 3, n + 2, CHUNK do
    deleted = deleted + call('UNLINK', unpack(KEYS, lo, min(n + 2, lo + CHUNK - 1)))
  end
  return {deleted, 0, 0, ledger_ok}
end
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
if ttl > 0 then  -- one SET … PX … GET per key (cheaper here than an MGET, then SET … PX per winner)
  for i = 1, n do
    local key, new, px = KEYS[i + 2], ARGV[i + 6], ARGV[i + 6 + n]
    if px == '-' then  -- expired (live while event >= now - ttl, inclusive): not written
      expired = expired + 1
    else
      local old = call('SET', key, new, 'PX', px, 'GET')
      if old and old ~= new and byte(old, 1) == 1 then
        local oev, ocr = fields('<i8i8', old, 2)
        local nev, ncr = fields('<i8i8', new, 2)
        if oev > nev or (oev == nev and ocr > ncr) then
          kept = kept + 1  -- the older case: put the stored value back, with its own expiry
          call('SET', key, old, 'PX', math.max(1, floor((oev + ttl - now) / 1000)))
        else
          written = written + 1
        end
      else
        written = written + 1
      end
    end
  end
  return {written, kept, expired, ledger_ok}
end
-- No TTL: per chunk of keys one MGET, the comparison here, one MSET of the winners. In mode w a
-- key may come twice: it then meets the value this call wrote for it. In mode u (distinct keys),
-- a chunk that follows one whose keys were all new is first sent as one MSETNX, which sets it only
-- when none of its keys exists (a first fill: no MGET, no comparison) and otherwise sets nothing,
-- and the chunk goes the MGET way. The first chunk is small: it probes whether the keys are new.
local mine = mode ~= 'u' and {} or nil
local pairs_ = {}
local fresh = false
local lo = 1
while lo <= n do
  local hi = min(n, lo + (lo == 1 and PROBE or CHUNK) - 1)
  local m = 0
  if fresh then
    for i = lo, hi do
      pairs_[m + 1] = KEYS[i + 2]
      pairs_[m + 2] = ARGV[i + 6]
      m = m + 2
    end
    if call('MSETNX', unpack(pairs_, 1, m)) == 1 then
      written = written + (hi - lo + 1)
    else
      fresh = false
      m = 0
    end
  end
  if not fresh then
    local olds = call('MGET', unpack(KEYS, lo + 2, hi + 2))
    fresh = mode == 'u'
    for i = lo, hi do
      local key, new = KEYS[i + 2], ARGV[i + 6]
      local old = olds[i - lo + 1]
      if mine and mine[key] then old = mine[key] end
      local stays = false
      if old then
        fresh = false
        if old ~= new and byte(old, 1) == 1 then  -- the same bytes (a rerun): the write stands
          local oev, ocr = fields('<i8i8', old, 2)
          local nev, ncr = fields('<i8i8', new, 2)
          stays = oev > nev or (oev == nev and ocr > ncr)
        end
      end
      if stays then
        kept = kept + 1
      else
        written = written + 1
        if mine then mine[key] = new end
        pairs_[m + 1] = key
        pairs_[m + 2] = new
        m = m + 2
      end
    end
    if m > 0 then call('MSET', unpack(pairs_, 1, m)) end
  end
  lo = hi + 1
end
return {written, kept, expired, ledger_ok}
