/* benches/instructions: lets the callgrind-marker plugin (LuaJIT FFI) end a
 * measured interval. Under callgrind the client request dumps the counts
 * since the previous dump, labelled, and zeroes them; outside valgrind it is
 * a few no-op instructions. Built by benches/instructions/run with gcc. */
#include <valgrind/callgrind.h>

void kong_rs_callgrind_dump(const char *label) {
  CALLGRIND_DUMP_STATS_AT(label);
}

/* 1 when running under valgrind, so the run can refuse a plain nginx. */
int kong_rs_callgrind_active(void) {
  return RUNNING_ON_VALGRIND ? 1 : 0;
}
