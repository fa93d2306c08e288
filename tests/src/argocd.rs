//! Argo CD health checks (`argocd/resource_customizations`) run as Argo CD
//! runs them: the object as the global `obj`, the script's returned table
//! read for `status` and `message`, by a real Lua 5.1 interpreter (Argo CD
//! embeds gopher-lua, a Lua 5.1).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

/// The interpreter; `make test` installs Debian's `lua5.1`.
pub const LUA: &str = "lua5.1";

/// `argocd/resource_customizations/certshift.io/<kind>`.
pub fn kind_dir(kind: &str) -> PathBuf {
    crate::repo_path(&format!("argocd/resource_customizations/certshift.io/{kind}"))
}

/// The health `(status, message)` the kind's `health.lua` gives `object`.
pub fn health(kind: &str, object: &Value) -> (String, String) {
    let script = kind_dir(kind).join("health.lua");
    // The chunk returns its table; print both fields with a separator no
    // message holds.
    let program = format!(
        "obj = {}\nlocal hs = dofile({})\nio.write(hs.status, \"\\0\", hs.message or \"\")\n",
        lua_value(object),
        lua_string(&script.to_string_lossy())
    );
    let mut lua = Command::new(LUA)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("{LUA} not found ({err}): make test installs Debian's lua5.1"));
    lua.stdin
        .take()
        .expect("stdin")
        .write_all(program.as_bytes())
        .expect("lua stdin");
    let out = lua.wait_with_output().expect("lua");
    assert!(
        out.status.success(),
        "{kind}/health.lua failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let (status, message) = text.split_once('\0').expect("status and message");
    (status.to_owned(), message.to_owned())
}

/// A JSON value as a Lua 5.1 constructor, as gopher-lua's JSON decoding
/// shapes it: objects keyed by string, arrays from 1, null as nil.
fn lua_value(value: &Value) -> String {
    match value {
        Value::Null => "nil".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => format!("{{{}}}", items.iter().map(lua_value).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A Lua string literal: quotes, backslashes and control characters escaped
/// (control characters as decimal `\ddd`: Lua 5.1 has no `\x`); other text,
/// UTF-8 included, as is (Lua strings are 8-bit clean).
fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_control() => out.push_str(&format!("\\{:03}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
