//! The FFI fast path, called the way LuaJIT calls it: through the C ABI of
//! `ffi/kong_rs.h`, with the handle a module's `new` returns.

use kong_rs::ffi::{
    KONG_RS_BAD_CALL, KONG_RS_FAILED, KONG_RS_OK, KONG_RS_SHORT, KongRsInstance, kong_rs_ffi_call,
    kong_rs_ffi_instance_free, kong_rs_ffi_output,
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
        .call((conf, true))
        .unwrap();
    let names: Vec<String> = instance.get("fast_headers").unwrap();
    assert_eq!(names, ["X-Token"]);
    assert!(instance.get::<bool>("fast_body").unwrap());
    let pointer: mlua::LightUserData = instance.get("fast").unwrap();
    pointer.0.cast()
}

struct Call {
    code: i32,
    actions: Vec<u8>,
    status: i32,
    body: Option<Vec<u8>>,
    error: String,
}

fn raw(input: Option<&[u8]>) -> (*const std::os::raw::c_char, usize) {
    input.map_or((std::ptr::null(), 0), |b| (b.as_ptr().cast(), b.len()))
}

/// Calls the fast path with `inputs` and a buffer of `size` bytes.
fn call_sized(
    instance: *mut KongRsInstance,
    phase: i32,
    inputs: &[Option<&[u8]>],
    size: usize,
) -> Call {
    let mut all = [(std::ptr::null(), 0); 4];
    for (slot, input) in all.iter_mut().zip(inputs) {
        *slot = raw(*input);
    }
    let mut buf = vec![0u8; size];
    let mut lengths = [0i32; 3];
    let mut code = unsafe {
        kong_rs_ffi_call(
            instance,
            phase,
            inputs.len() as i32,
            all[0].0,
            all[0].1,
            all[1].0,
            all[1].1,
            all[2].0,
            all[2].1,
            all[3].0,
            all[3].1,
            buf.as_mut_ptr(),
            size as i32,
            lengths.as_mut_ptr(),
        )
    };
    if code == KONG_RS_SHORT {
        buf = vec![0u8; lengths[2] as usize];
        code = unsafe {
            kong_rs_ffi_output(
                instance,
                buf.as_mut_ptr(),
                buf.len() as i32,
                lengths.as_mut_ptr(),
            )
        };
    }
    let actions_len = lengths[2].max(0) as usize;
    let tail = &buf[actions_len..];
    let (body, error) = match code {
        KONG_RS_OK if lengths[1] >= 0 => {
            (Some(tail[..lengths[1] as usize].to_vec()), String::new())
        }
        KONG_RS_OK => (None, String::new()),
        _ => (
            None,
            String::from_utf8_lossy(&tail[..lengths[1].max(0) as usize]).into_owned(),
        ),
    };
    Call {
        code,
        actions: buf[..actions_len].to_vec(),
        status: lengths[0],
        body,
        error,
    }
}

fn call(instance: *mut KongRsInstance, phase: i32, inputs: &[Option<&[u8]>]) -> Call {
    call_sized(instance, phase, inputs, 4096)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn inputs_in_actions_out() {
    let lua = Lua::new();
    let instance = handle(&lua, "continue");
    let result = call(instance, 2, &[Some(&b"t\xffk"[..]), Some(&b"{}"[..])]);
    assert_eq!(result.code, KONG_RS_OK, "{}", result.error);
    assert_eq!(result.status, 0);
    assert!(contains(&result.actions, b"x-token-seen"));
    assert!(contains(&result.actions, b"t\xffk"), "bytes unchanged");
    assert!(contains(&result.actions, b"checking"), "log line deferred");

    let absent = call(instance, 2, &[None, None]);
    assert!(contains(&absent.actions, b"(none)"));
    unsafe { kong_rs_ffi_instance_free(instance) };
}

#[test]
fn an_exit_carries_status_body_and_headers() {
    let lua = Lua::new();
    let instance = handle(&lua, "exit");
    let result = call(instance, 2, &[None, Some(&b"denied"[..])]);
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
        let result = call(instance, 2, &[None, None]);
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
fn an_output_larger_than_the_buffer_is_fetched_in_a_second_call() {
    let lua = Lua::new();
    let instance = handle(&lua, "continue");
    let token = vec![b't'; 10_000];
    let result = call_sized(instance, 2, &[Some(&token), None], 64);
    assert_eq!(result.code, KONG_RS_OK, "{}", result.error);
    assert!(contains(&result.actions, &token));
    unsafe { kong_rs_ffi_instance_free(instance) };
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
    let wrong = call(instance, 2, &[None]);
    assert_eq!(wrong.code, KONG_RS_BAD_CALL);
    assert!(
        wrong.error.contains("expected 2 inputs, got 1"),
        "{}",
        wrong.error
    );
    // header_filter gets no body input.
    assert_eq!(call(instance, 3, &[None]).code, KONG_RS_OK);
    assert_eq!(call(std::ptr::null_mut(), 2, &[]).code, KONG_RS_BAD_CALL);
    // More inputs than the plugin declared.
    let too_many = call(instance, 2, &[None, None, None, None]);
    assert_eq!(too_many.code, KONG_RS_BAD_CALL);
    unsafe { kong_rs_ffi_instance_free(instance) };
    unsafe { kong_rs_ffi_instance_free(std::ptr::null_mut()) };
}
