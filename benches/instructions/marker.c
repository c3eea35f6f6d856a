/* benches/instructions: native code the bench-only plugins call.
 *
 * - The callgrind-marker plugin (LuaJIT FFI) ends a measured interval:
 *   under callgrind the client request dumps the counts since the previous
 *   dump, labelled, and zeroes them; outside valgrind it is a few no-op
 *   instructions.
 * - The lua-bench-c-noop plugin calls kong_rs_bench_noop, a Lua C function
 *   that reads what a native phase must read (its data, the instance id)
 *   and does nothing: the floor of any native phase entered through the
 *   Lua C API, which rs-bench-empty is compared with.
 *
 * Built by benches/instructions/run with gcc. */
#include <lua.h>
#include <valgrind/callgrind.h>

void kong_rs_callgrind_dump(const char *label) {
  CALLGRIND_DUMP_STATS_AT(label);
}

/* 1 when running under valgrind, so the run can refuse a plain nginx. */
int kong_rs_callgrind_active(void) {
  return RUNNING_ON_VALGRIND ? 1 : 0;
}

static int noop_phase(lua_State *L) {
  /* as kong-rs's raw phase: its data (upvalue 1) and the id (argument 1);
   * no value back, as a phase that continues with nothing to apply */
  const void *data = lua_touserdata(L, lua_upvalueindex(1));
  lua_Number id = lua_tonumber(L, 1);
  (void)data;
  (void)id;
  return 0;
}

/* package.loadlib(path, "kong_rs_bench_noop_open")(): the no-op phase
 * function, with a light userdata as its data. */
int kong_rs_bench_noop_open(lua_State *L) {
  static int data;
  lua_pushlightuserdata(L, &data);
  lua_pushcclosure(L, noop_phase, 1);
  return 1;
}
