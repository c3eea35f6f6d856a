/*
 * kong_rs.h: the C ABI of the kong-rs LuaJIT FFI fast path (src/ffi.rs).
 *
 * Exported by every native module built with kong-rs. Loaded from Lua by
 * ffi/kong_rs_ffi.lua, whose cdef must match the declarations below
 * (spec/ffi/01-abi_spec.lua checks it).
 *
 * Ownership: a kong_rs_instance_t comes from the module's `new` (field
 * `fast` of an instance) and is owned by Lua, which frees it once through
 * ffi.gc(ptr, kong_rs_ffi_instance_free). Outputs are copied into the
 * caller's buffer. Errors come back through that buffer; nothing unwinds
 * across this ABI; no function here touches the lua_State.
 *
 * The call allocates nothing on the Lua side even when LuaJIT interprets
 * it: inputs are plain arguments (a Lua string converts to const char *),
 * lengths come back as int32_t.
 */
#ifndef KONG_RS_H
#define KONG_RS_H

#include <stddef.h>
#include <stdint.h>

typedef struct kong_rs_instance kong_rs_instance_t;

/* Return codes. */
#define KONG_RS_OK 0        /* buf: actions[lengths[2]] then exit body[lengths[1]] */
#define KONG_RS_FAILED 1    /* buf: log lines[lengths[2]] then message[lengths[1]] */
#define KONG_RS_BAD_CALL 2  /* buf: message[lengths[1]] */
#define KONG_RS_SHORT 3     /* buf too small: lengths[2] = size needed, see kong_rs_ffi_output */

/* Runs a phase: 1 rewrite, 2 access, 3 header_filter, 6 log.
 * Inputs (at most 4, NULL when absent): the declared request headers in
 * order, then the request body when declared and the phase is rewrite or
 * access. lengths[0] = exit status (0: continue), lengths[1] = exit body or
 * message length (-1: no body), lengths[2] = actions length. */
int32_t kong_rs_ffi_call(kong_rs_instance_t *instance, int32_t phase, int32_t n_inputs,
                         const char *in1, size_t len1, const char *in2, size_t len2,
                         const char *in3, size_t len3, const char *in4, size_t len4,
                         uint8_t *buf, int32_t buf_size, int32_t *lengths);

/* Copies the last call's output into a larger buffer (after KONG_RS_SHORT). */
int32_t kong_rs_ffi_output(kong_rs_instance_t *instance, uint8_t *buf, int32_t buf_size,
                           int32_t *lengths);

/* Frees an instance (NULL is ignored). */
void kong_rs_ffi_instance_free(kong_rs_instance_t *instance);

#endif /* KONG_RS_H */
