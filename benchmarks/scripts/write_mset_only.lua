-- feature_layer online layout v1: fenced, ledgered writes; an older value never wins.
--
-- Every call is one request of one materialization run:
--   KEYS[1]  the view's fence key (the largest fencing token that claimed the view)
--   KEYS[2]  the run's ledger (a bitmap: bit 0 set by the claim, bit s by request s)
--   KEYS[3…] data keys (modes w, f, d) or marker keys (mode c)
--   ARGV[1]  mode: w write, f force-write (full refresh), d delete, a claim, t touch, c commit
--   ARGV[2]  the run's fencing token; ARGV[3] its lease expiry (us since epoch, 0 = none);
--   ARGV[4]  the request's ledger bit s (0 = none)
-- A token smaller than the fence, or a lease already expired by the server's clock (TIME), is
-- refused with a FENCED / LEASE_EXPIRED error before anything is written: a run that lost its
-- lease cannot write a single value. Each write/delete sets its ledger bit in the same atomic
-- script, so a snapshot, an AOF or a replica holds a value exactly when it holds its bit: a
-- ledger missing acknowledged bits at commit means acknowledged writes were lost.
--
-- w / f: ARGV[5] writer clock (us), ARGV[6] TTL in us (0 = none), ARGV[6 + i] the value of
-- KEYS[2 + i] (u8 version | i64 event_us | i64 created_us | …), with a TTL ARGV[6 + n + i] its
-- PX in ms computed by the writer (max(1, ceil((event_us + ttl - clock) / 1000))), or "-" when
-- the value is already expired. w keeps the stored value when its (event_us, created_us) is
-- newer (one SET … GET per key; the rare older case is put back with its own expiry); f (a full
-- refresh) replaces whatever is stored and unlinks keys whose value expired. Returns
-- {written, kept_newer, expired, ledger_ok}.
-- d: unlinks KEYS[3…]; returns {deleted, 0, 0, ledger_ok}.
-- a: sets the fence to the token, creates the ledger (bit 0) with PX ARGV[5] ms.
-- t: renews the ledger's PX (ARGV[5] ms); returns 1, or 0 when the ledger is gone.
-- c: checks that the ledger holds exactly ARGV[5] bits, then sets each marker KEYS[2 + i] to
--    ARGV[5 + i]; a LOST error (nothing set) otherwise.
local call = redis.call
local CHUNK = 3000
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
if mode == 'd' then
  local deleted = 0
  if n > 0 then deleted = call('UNLINK', unpack(KEYS, 3)) end
  return {deleted, 0, 0, ledger_ok}
end

for lo = 1, n, CHUNK do
  local hi = math.min(n, lo + CHUNK - 1)
  local pairs_, m = {}, 0
  for i = lo, hi do
    m = m + 2
    pairs_[m - 1] = KEYS[i + 2]
    pairs_[m] = ARGV[i + 6]
  end
  call('MSET', unpack(pairs_, 1, m))
end
return {n, 0, 0, ledger_ok}
