//! The FFI fast path, called the way LuaJIT calls it: through the C ABI of
//! `ffi/kong_rs.h`, with the handle a module's `new` returns.

use kong_rs::ffi::{
    KONG_RS_BAD_CALL, KONG_RS_FAILED, KONG_RS_OK, KongRsBytes, KongRsInstance, KongRsOutput,
    kong_rs_ffi_instance_free, kong_rs_ffi_run,
};
use kong_rs::{FastPath, Flow, ModuleBuilder, Pdk, Plugin, Result};
use mlua::{Lua, Table};
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Deserialize, JsonSchema)]
struct Config {
    action: String,
}

struct Fast {
    action: String,
}

#[kong_rs::plugin]
impl Plugin for Fast {
    type Config = Config;
    type State = ();
    const NAME: &'static str = "fast";
    const VERSION: &'static str = "0.1.0";
    const PRIORITY: i32 = 1;

    fn new(config: Config) -> Result<Self> {
        Ok(Fast {
            action: config.action,
        })
    }

    fn fast_path(&self) -> Option<FastPath> {
        Some(FastPath {
            request_headers: vec!["X-Token".into()],
            request_body: true,
        })
    }

    fn access(&self, kong: &mut dyn Pdk, _state: &mut ()) -> Result<Flow> {
        kong.log().info("checking")?;
        let token = kong.request().get_header("x-token")?;
        let body = kong.request().get_raw_body()?.unwrap_or_default();
        match self.action.as_str() {
            "err" => Err("refused on purpose".into()),
            "panic" => panic!("boom"),
            "undeclared" => kong.request().get_header("x-other").map(|_| Flow::Continue),
            "exit" => Ok(Flow::Exit(
                kong_rs::Exit::new(401).body(body).header("x-why", "no"),
            )),
            _ => {
                let token = token.unwrap_or_else(|| b"(none)".to_vec());
                kong.service_request().set_header("x-token-seen", &token)?;
                Ok(Flow::Continue)
            }
        }
    }
}

/// Builds an instance in a Lua state and returns its FFI handle.
fn handle(lua: &Lua, action: &str) -> *mut KongRsInstance {
    let mut builder = ModuleBuilder::new(lua).unwrap();
    builder.add::<Fast>().unwrap();
    let module = builder.finish().unwrap();
    let factory: Table = module.get::<Table>("plugins").unwrap().get("fast").unwrap();
    let conf = lua.create_table().unwrap();
    conf.set("action", action).unwrap();
    let instance: Table = factory
        .get::<mlua::Function>("new")
        .unwrap()
        .call(conf)
        .unwrap();
    let names: Vec<String> = instance.get("fast_headers").unwrap();
    assert_eq!(names, ["X-Token"]);
    assert!(instance.get::<bool>("fast_body").unwrap());
    let pointer: mlua::LightUserData = instance.get("fast").unwrap();
    pointer.0.cast()
}

fn input(bytes: Option<&[u8]>) -> KongRsBytes {
    match bytes {
        Some(b) => KongRsBytes {
            ptr: b.as_ptr().cast(),
            len: b.len(),
        },
        None => KongRsBytes {
            ptr: std::ptr::null(),
            len: 0,
        },
    }
}

struct Call {
    code: i32,
    actions: Vec<u8>,
    status: i32,
    body: Option<Vec<u8>>,
    error: String,
}

fn call(instance: *mut KongRsInstance, phase: i32, inputs: &[KongRsBytes]) -> Call {
    let mut out = KongRsOutput {
        actions: input(None),
        body: input(None),
        status: -1,
    };
    let mut errbuf = [0u8; 256];
    let mut errlen = errbuf.len();
    let code = unsafe {
        kong_rs_ffi_run(
            instance,
            phase,
            inputs.as_ptr(),
            inputs.len(),
            &mut out,
            errbuf.as_mut_ptr().cast(),
            &mut errlen,
        )
    };
    let read = |b: &KongRsBytes| {
        (!b.ptr.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(b.ptr.cast::<u8>(), b.len) }.to_vec())
    };
    Call {
        code,
        actions: read(&out.actions).unwrap_or_default(),
        status: out.status,
        body: read(&out.body),
        error: if code == KONG_RS_OK {
            String::new()
        } else {
            String::from_utf8_lossy(&errbuf[..errlen]).into_owned()
        },
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn inputs_in_actions_out() {
    let lua = Lua::new();
    let instance = handle(&lua, "continue");
    let result = call(instance, 2, &[input(Some(b"t\xffk")), input(Some(b"{}"))]);
    assert_eq!(result.code, KONG_RS_OK, "{}", result.error);
    assert_eq!(result.status, 0);
    assert!(contains(&result.actions, b"x-token-seen"));
    assert!(contains(&result.actions, b"t\xffk"), "bytes unchanged");
    assert!(contains(&result.actions, b"checking"), "log line deferred");

    let absent = call(instance, 2, &[input(None), input(None)]);
    assert!(contains(&absent.actions, b"(none)"));
    unsafe { kong_rs_ffi_instance_free(instance) };
}

#[test]
fn an_exit_carries_status_body_and_headers() {
    let lua = Lua::new();
    let instance = handle(&lua, "exit");
    let result = call(instance, 2, &[input(None), input(Some(b"denied"))]);
    assert_eq!(result.code, KONG_RS_OK);
    assert_eq!(result.status, 401);
    assert_eq!(result.body.as_deref(), Some(&b"denied"[..]));
    assert!(contains(&result.actions, b"x-why"));
    unsafe { kong_rs_ffi_instance_free(instance) };
}

#[test]
fn failures_come_back_through_the_error_buffer_with_their_logs() {
    let lua = Lua::new();
    for (action, expected) in [
        ("err", "refused on purpose"),
        ("panic", "panicked: boom"),
        ("undeclared", "not declared in Plugin::fast_path"),
    ] {
        let instance = handle(&lua, action);
        let result = call(instance, 2, &[input(None), input(None)]);
        assert_eq!(result.code, KONG_RS_FAILED, "{action}");
        assert!(
            result.error.contains(expected),
            "{action}: {}",
            result.error
        );
        assert!(
            contains(&result.actions, b"checking"),
            "{action}: logs kept"
        );
        assert!(
            !contains(&result.actions, b"x-token-seen"),
            "{action}: writes dropped"
        );
        unsafe { kong_rs_ffi_instance_free(instance) };
    }
}

#[test]
fn bad_calls_are_refused_not_crashes() {
    let lua = Lua::new();
    let instance = handle(&lua, "continue");
    assert_eq!(
        call(instance, 5, &[]).code,
        KONG_RS_BAD_CALL,
        "body_filter is not fast"
    );
    let wrong = call(instance, 2, &[input(None)]);
    assert_eq!(wrong.code, KONG_RS_BAD_CALL);
    assert!(wrong.error.contains("expected 2 inputs, got 1"));
    // header_filter gets no body input.
    assert_eq!(call(instance, 3, &[input(None)]).code, KONG_RS_OK);
    assert_eq!(call(std::ptr::null_mut(), 2, &[]).code, KONG_RS_BAD_CALL);
    unsafe { kong_rs_ffi_instance_free(instance) };
    unsafe { kong_rs_ffi_instance_free(std::ptr::null_mut()) };
}
