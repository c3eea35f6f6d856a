-- rs-file-log when the file system fails (issue 4): a missing directory, a
-- directory where the file should be, a deleted file, a full disk (a 64 KB
-- tmpfs). Each time: the error is logged, no request fails, no worker dies,
-- and lines resume once the path works again. Directories are made with
-- the owner of h.files_dir(): the workers run as nobody when we are root.
-- Runs on real Kong too (h.files_dir, h.worker_pids, h.error_log).
local h = require "spec.support.helpers"
local S = require "spec.reliability.support"
local cjson = require "cjson.safe"

local function sh(cmd)
  return S.sh(cmd .. " >/dev/null 2>&1")
end

-- A worker keeps its log file open (reopen=false), so a plain umount of the
-- tmpfs fails with EBUSY and the mount stays behind: detach it lazily (the
-- kernel frees it when the last handle closes), every stacked one.
local function unmount_all(mnt)
  for _ = 1, 10 do
    if not sh("mountpoint -q " .. mnt) then
      return true
    end
    sh("umount -l " .. mnt)
  end
  return not sh("mountpoint -q " .. mnt)
end

describe("reliability: rs-file-log on a failing file system", function()
  local admin, proxy, workers, plugin_id, dir

  local function all_ok(n)
    for i = 1, n do
      local res = proxy:get("/log?i=" .. i)
      assert.equal(200, res.status, "a request failed because of logging: " .. tostring(res.body))
    end
  end

  local function lines(path)
    local out = {}
    for _, l in ipairs(S.read_lines(path)) do
      local entry = cjson.decode(l)
      assert.is_table(entry, "not a JSON line: " .. l)
      out[#out + 1] = entry
    end
    return out
  end

  local function set_path(path, reopen)
    h.res_status(200, admin:patch("/plugins/" .. plugin_id, { config = { path = path, reopen = reopen or false } }))
    h.settle() -- Kong applies it after its plugins iterator rebuild
  end

  local function errors_since(offset, needle)
    local log = h.error_log():sub(offset + 1)
    return select(2, log:gsub(needle:gsub("%p", "%%%0"), ""))
  end

  lazy_setup(function()
    h.start({ plugins = { "rs-file-log" } })
    admin, proxy = h.admin(), h.proxy()
    dir = h.files_dir() .. "/fs"
    assert(S.worker_mkdir(dir))
    h.res_status(201, admin:post("/services", { name = "svc", url = h.upstream_url() }))
    h.res_status(201, admin:post("/services/svc/routes", { name = "log", paths = { "/log" } }))
    local res = admin:post("/routes/log/plugins", { name = "rs-file-log", config = { path = dir .. "/ok.log" } })
    h.res_status(201, res)
    plugin_id = res.json.id
    h.settle()
    workers = h.worker_pids()
  end)

  lazy_teardown(function()
    if dir then
      unmount_all(dir .. "/full")
    end
    h.stop()
  end)

  after_each(function()
    assert.same(workers, h.worker_pids())
    assert.falsy(S.log_has_death(h.error_log()))
  end)

  for _, reopen in ipairs({ false, true }) do
    it("missing directory (reopen=" .. tostring(reopen) .. "): logged, requests pass, lines resume once it exists", function()
      local path = dir .. "/missing-" .. tostring(reopen) .. "/x.log"
      set_path(path, reopen)
      local offset = #h.error_log()
      all_ok(10)
      h.wait_until(function() return errors_since(offset, "could not write to " .. path) >= 10 end, 5)
      assert(S.worker_mkdir(dir .. "/missing-" .. tostring(reopen)))
      all_ok(10)
      h.wait_until(function() return #lines(path) == 10 end, 5)
    end)

    it("a directory where the file should be (reopen=" .. tostring(reopen) .. "): logged, lines resume once removed", function()
      local path = dir .. "/isdir-" .. tostring(reopen) .. ".log"
      assert(S.worker_mkdir(path))
      set_path(path, reopen)
      local offset = #h.error_log()
      all_ok(10)
      h.wait_until(function() return errors_since(offset, "could not write to " .. path) >= 10 end, 5)
      assert(sh("rmdir " .. path))
      all_ok(10)
      h.wait_until(function() return #lines(path) == 10 end, 5)
    end)
  end

  it("deleted file, reopen=true: recreated by the next request, nothing lost after it", function()
    local path = dir .. "/deleted-reopen.log"
    set_path(path, true)
    all_ok(5)
    h.wait_until(function() return #lines(path) == 5 end, 5)
    os.remove(path)
    all_ok(7)
    h.wait_until(function() return #lines(path) == 7 end, 5)
  end)

  it("deleted file, reopen=false: like Kong's file-log, lines go to the unlinked file until the config changes; no request fails", function()
    local path = dir .. "/deleted-kept.log"
    set_path(path, false)
    all_ok(6)
    h.wait_until(function() return #lines(path) == 6 end, 5)
    os.remove(path)
    all_ok(6)
    h.sleep(0.2)
    -- A worker that held a handle wrote to the unlinked file; one that had
    -- served none of the first requests (the proxy client keeps one
    -- connection, so one worker may have taken them all) opened the path
    -- afresh and its lines are there. Which worker took which request is
    -- not ours to choose: the kept handle itself is checked in Rust
    -- (file_log.rs, reopen_follows_rotation_and_kept_handle_does_not).
    local before = #lines(path)
    -- any config write rebuilds the instance: a new handle, on the new file
    set_path(path, false)
    all_ok(6)
    h.wait_until(function() return #lines(path) == before + 6 end, 5)
  end)

  -- Once a bug (docs/reliability.md): on ENOSPC a partial line stayed on
  -- disk and the next line, from either worker, was glued to it. Fixed: the
  -- fragment is cut off again (src/plugins/file_log.rs).

  local function mount_full()
    local mnt = dir .. "/full"
    assert(S.worker_mkdir(mnt))
    assert(unmount_all(mnt), "cannot unmount " .. mnt)
    if not sh("mount -t tmpfs -o size=64k,mode=0777 kong-rs-full " .. mnt) then
      return nil
    end
    return mnt
  end

  -- fills the tmpfs through the plugin; returns the path, all requests passed
  local function fill(mnt)
    local path = mnt .. "/full.log"
    os.remove(path)
    set_path(path, false)
    local offset = #h.error_log()
    local long = string.rep("p", 150)
    for i = 1, 400 do -- ~330 bytes a line: 64 KB fills after ~200
      local res = proxy:get("/log/" .. long .. "?i=" .. i)
      assert.equal(200, res.status, "a request failed because the disk is full")
    end
    h.wait_until(function() return errors_since(offset, "No space left on device") >= 1 end, 5)
    return path
  end

  -- complete JSON lines, and the count of other (partial) lines
  local function scan(path)
    local good, bad = 0, 0
    for _, l in ipairs(S.read_lines(path)) do
      if cjson.decode(l) then good = good + 1 else bad = bad + 1 end
    end
    return good, bad
  end

  it("full disk (64 KB tmpfs): ENOSPC logged, requests pass, lines resume in a new file once space is freed", function()
    local mnt = mount_full()
    if not mnt then
      pending("cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)")
      return
    end
    local path = fill(mnt)
    local good, bad = scan(path)
    assert.is_true(good > 100 and good < 400, good .. " lines")
    assert.is_true(bad <= 1, bad .. " partial lines")
    -- free the space by removing the file: the handle was dropped on the
    -- error, so the next write reopens (creates) it
    os.remove(path)
    all_ok(10)
    h.wait_until(function() return #lines(path) == 10 end, 5)
    assert(unmount_all(mnt))
  end)

  it("full disk, space freed in place (tmpfs grown): every line written after it is valid JSON, from either worker", function()
    local mnt = mount_full()
    if not mnt then
      pending("cannot mount a tmpfs here")
      return
    end
    local path = fill(mnt)
    local good_before = scan(path)
    assert(sh("mount -o remount,size=1m " .. mnt))
    all_ok(10)
    h.wait_until(function() return (scan(path)) >= good_before + 9 end, 5)
    h.sleep(0.1)
    local good = scan(path)
    assert.equal(good_before + 10, good, "a line written after ENOSPC was glued to a partial line")
    assert(unmount_all(mnt))
  end)

  -- nginx does not ignore SIGXFSZ, so a worker writing past RLIMIT_FSIZE
  -- was killed by the signal; rs-file-log now ignores it and gets EFBIG.
  it("file size limit (RLIMIT_FSIZE on the workers): no worker dies, no request fails (SIGXFSZ ignored since d329a58)", function()
    local path = dir .. "/fsize.log"
    os.remove(path)
    set_path(path, false)
    all_ok(4)
    for _, pid in ipairs(workers) do
      assert(S.limit_file_size(pid, 4000), "cannot lower RLIMIT_FSIZE of worker " .. pid)
    end
    local offset = #h.error_log()
    all_ok(40)
    assert.same(workers, h.worker_pids(), "a worker died")
    -- (EFBIG being logged is not checked: not seen in our runs, see docs/reliability.md)
  end)
end)
