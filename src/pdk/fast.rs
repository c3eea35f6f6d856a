//! The PDK of the FFI fast path: inputs fetched by the Lua side before the
//! call, writes and logs deferred, nothing else (it must not touch Lua: code
//! entered through LuaJIT FFI may not call back into the VM).

use super::actions::{Actions, Op};
use super::{
    Client, Ctx, Entity, Headers, Log, LogLevel, Nginx, QueryValue, Request, Response, Router,
    ServiceRequest, ServiceResponse, Value,
};
use crate::error::{Error, Result};

/// The fast-path PDK for one phase call.
pub(crate) struct FastPdk<'a> {
    pub(crate) header_names: &'a [String],
    pub(crate) header_values: &'a [Option<&'a [u8]>],
    pub(crate) body: Option<Option<&'a [u8]>>,
    pub(crate) actions: &'a mut Actions,
}

fn unavailable<T>(call: &str) -> Result<T> {
    Err(Error::msg(format!(
        "kong.{call} is not available on the FFI fast path (declare it in Plugin::fast_path or return None)"
    )))
}

crate::pdk::namespaces!(FastPdk<'_>);

impl Log for FastPdk<'_> {
    fn log(&mut self, level: LogLevel, message: &str) -> Result<()> {
        self.actions.push(Op::log(level), b"", message.as_bytes())
    }
}

impl Request for FastPdk<'_> {
    fn get_header(&mut self, name: &str) -> Result<Option<Vec<u8>>> {
        match self
            .header_names
            .iter()
            .position(|declared| declared.eq_ignore_ascii_case(name))
        {
            Some(i) => Ok(self
                .header_values
                .get(i)
                .copied()
                .flatten()
                .map(<[u8]>::to_vec)),
            None => Err(Error::msg(format!(
                "kong.request.get_header({name:?}): the header is not declared in Plugin::fast_path"
            ))),
        }
    }
    fn get_headers(&mut self) -> Result<Headers> {
        unavailable("request.get_headers")
    }
    fn get_method(&mut self) -> Result<String> {
        unavailable("request.get_method")
    }
    fn get_path(&mut self) -> Result<Vec<u8>> {
        unavailable("request.get_path")
    }
    fn get_path_with_query(&mut self) -> Result<Vec<u8>> {
        unavailable("request.get_path_with_query")
    }
    fn get_raw_query(&mut self) -> Result<Vec<u8>> {
        unavailable("request.get_raw_query")
    }
    fn get_query_arg(&mut self, _name: &str) -> Result<Option<QueryValue>> {
        unavailable("request.get_query_arg")
    }
    fn get_query(&mut self) -> Result<Vec<(Vec<u8>, QueryValue)>> {
        unavailable("request.get_query")
    }
    fn get_scheme(&mut self) -> Result<String> {
        unavailable("request.get_scheme")
    }
    fn get_host(&mut self) -> Result<String> {
        unavailable("request.get_host")
    }
    fn get_port(&mut self) -> Result<u16> {
        unavailable("request.get_port")
    }
    fn get_http_version(&mut self) -> Result<Option<f64>> {
        unavailable("request.get_http_version")
    }
    fn get_raw_body(&mut self) -> Result<Option<Vec<u8>>> {
        match self.body {
            Some(body) => Ok(body.map(<[u8]>::to_vec)),
            None => unavailable("request.get_raw_body"),
        }
    }
    fn get_start_time(&mut self) -> Result<f64> {
        unavailable("request.get_start_time")
    }
}

impl Response for FastPdk<'_> {
    fn get_status(&mut self) -> Result<u16> {
        unavailable("response.get_status")
    }
    fn get_header(&mut self, _name: &str) -> Result<Option<Vec<u8>>> {
        unavailable("response.get_header")
    }
    fn get_headers(&mut self) -> Result<Headers> {
        unavailable("response.get_headers")
    }
    fn set_status(&mut self, status: u16) -> Result<()> {
        self.actions
            .push(Op::RespSetStatus, b"", status.to_string().as_bytes())
    }
    fn set_header(&mut self, name: &str, value: &[u8]) -> Result<()> {
        self.actions.push(Op::RespSetHeader, name.as_bytes(), value)
    }
    fn add_header(&mut self, name: &str, value: &[u8]) -> Result<()> {
        self.actions.push(Op::RespAddHeader, name.as_bytes(), value)
    }
    fn clear_header(&mut self, name: &str) -> Result<()> {
        self.actions.push(Op::RespClearHeader, name.as_bytes(), b"")
    }
}

impl ServiceRequest for FastPdk<'_> {
    fn set_header(&mut self, name: &str, value: &[u8]) -> Result<()> {
        self.actions.push(Op::SreqSetHeader, name.as_bytes(), value)
    }
    fn add_header(&mut self, name: &str, value: &[u8]) -> Result<()> {
        self.actions.push(Op::SreqAddHeader, name.as_bytes(), value)
    }
    fn clear_header(&mut self, name: &str) -> Result<()> {
        self.actions.push(Op::SreqClearHeader, name.as_bytes(), b"")
    }
    fn set_headers(&mut self, headers: &[(&str, &[u8])]) -> Result<()> {
        for (name, value) in headers {
            self.actions
                .push(Op::SreqSetHeader, name.as_bytes(), value)?;
        }
        Ok(())
    }
    fn set_path(&mut self, path: &[u8]) -> Result<()> {
        self.actions.push(Op::SreqSetPath, b"", path)
    }
    fn set_raw_query(&mut self, query: &[u8]) -> Result<()> {
        self.actions.push(Op::SreqSetRawQuery, b"", query)
    }
    fn set_query(&mut self, _args: &[(&[u8], &[u8])]) -> Result<()> {
        unavailable("service.request.set_query")
    }
    fn set_method(&mut self, method: &str) -> Result<()> {
        self.actions.push(Op::SreqSetMethod, b"", method.as_bytes())
    }
    fn set_raw_body(&mut self, body: &[u8]) -> Result<()> {
        self.actions.push(Op::SreqSetRawBody, b"", body)
    }
}

impl ServiceResponse for FastPdk<'_> {
    fn get_status(&mut self) -> Result<Option<u16>> {
        unavailable("service.response.get_status")
    }
    fn get_header(&mut self, _name: &str) -> Result<Option<Vec<u8>>> {
        unavailable("service.response.get_header")
    }
    fn get_headers(&mut self) -> Result<Headers> {
        unavailable("service.response.get_headers")
    }
    fn get_raw_body(&mut self) -> Result<Option<Vec<u8>>> {
        unavailable("service.response.get_raw_body")
    }
}

impl Client for FastPdk<'_> {
    fn get_ip(&mut self) -> Result<String> {
        unavailable("client.get_ip")
    }
    fn get_forwarded_ip(&mut self) -> Result<String> {
        unavailable("client.get_forwarded_ip")
    }
    fn get_port(&mut self) -> Result<u16> {
        unavailable("client.get_port")
    }
    fn get_consumer(&mut self) -> Result<Option<Entity>> {
        unavailable("client.get_consumer")
    }
    fn get_credential(&mut self) -> Result<Option<Entity>> {
        unavailable("client.get_credential")
    }
}

impl Ctx for FastPdk<'_> {
    fn shared_get(&mut self, _key: &str) -> Result<Value> {
        unavailable("ctx.shared")
    }
    fn shared_set(&mut self, _key: &str, _value: Value) -> Result<()> {
        unavailable("ctx.shared")
    }
    fn plugin_get(&mut self, _key: &str) -> Result<Value> {
        unavailable("ctx.plugin")
    }
    fn plugin_set(&mut self, _key: &str, _value: Value) -> Result<()> {
        unavailable("ctx.plugin")
    }
}

impl Nginx for FastPdk<'_> {
    fn get_subsystem(&mut self) -> Result<String> {
        unavailable("nginx.get_subsystem")
    }
}

impl Router for FastPdk<'_> {
    fn get_route(&mut self) -> Result<Option<Entity>> {
        unavailable("router.get_route")
    }
    fn get_service(&mut self) -> Result<Option<Entity>> {
        unavailable("router.get_service")
    }
}
