/*
 * kong_rs.h: the C ABI of the kong-rs LuaJIT FFI fast path (src/ffi.rs).
 *
 * Exported by every native module built with kong-rs. Loaded from Lua by
 * ffi/kong_rs_ffi.lua, whose cdef must match the declarations below
 * (a spec checks it).
 *
 * Ownership: a kong_rs_instance_t comes from the module's `new` (field
 * `fast` of an instance) and is owned by Lua, which frees it once through
 * ffi.gc(ptr, kong_rs_ffi_instance_free). Output pointers stay valid until
 * the next call on the same instance. Errors are written to the caller's
 * buffer; nothing unwinds across this ABI; no function here touches the
 * lua_State.
 */
#ifndef KONG_RS_H
#define KONG_RS_H

#include <stddef.h>
#include <stdint.h>

/* A byte string; ptr NULL means absent (nil). */
typedef struct {
    const char *ptr;
    size_t len;
} kong_rs_bytes_t;

/* What a phase produced. */
typedef struct {
    kong_rs_bytes_t actions; /* deferred writes and logs (kong_rs.actions format) */
    kong_rs_bytes_t body;    /* exit body when status != 0; ptr NULL: none */
    int32_t status;          /* 0: continue; else exit with this status */
} kong_rs_output_t;

typedef struct kong_rs_instance kong_rs_instance_t;

/* Return codes of kong_rs_ffi_run. */
#define KONG_RS_OK 0        /* ran; see out */
#define KONG_RS_FAILED 1    /* plugin failed; message in errbuf, out->actions = its logs */
#define KONG_RS_BAD_CALL 2  /* invalid arguments; message in errbuf */

/* Phase ids: 1 rewrite, 2 access, 3 header_filter, 6 log.
 * inputs: the declared request headers in order (ptr NULL when absent),
 * then the request body when declared and the phase is rewrite or access.
 * errbuf holds *errbuf_len bytes; on error *errbuf_len becomes the length. */
int32_t kong_rs_ffi_run(kong_rs_instance_t *instance, int32_t phase,
                        const kong_rs_bytes_t *inputs, size_t n_inputs,
                        kong_rs_output_t *out, char *errbuf, size_t *errbuf_len);

/* Frees an instance (NULL is ignored). */
void kong_rs_ffi_instance_free(kong_rs_instance_t *instance);

#endif /* KONG_RS_H */
