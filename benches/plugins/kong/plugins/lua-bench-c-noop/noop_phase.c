/* The native half of the lua-bench-c-noop plugin (handler.lua): a Lua C
 * function that reads what a kong-rs phase must read (its data, the
 * instance id) and does nothing. What the plugin adds over no plugin is the
 * floor of any native phase entered through the Lua C API, which
 * rs-bench-empty is compared with. Built by benches/instructions/run and
 * benches/e2e/kong-run with gcc; loaded with package.loadlib. */
#include <lua.h>

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
