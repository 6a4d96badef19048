//! The hostile-guest corpus as data: each component, how it is built, the limits it runs
//! under and what the host must make of it. Shared by `tests/all/corpus.rs`, which checks each
//! entry's class through a real host, and `tests/isolation`, which runs the run-time entries
//! beside a neighbour queue and measures that queue's latency.
//!
//! Components come from two places: the Rust guests of guest-examples/rust (the `hostile`
//! guest takes the attack to run as its payload), and core modules written here in WAT, made
//! into components of the `wasmq:job/handler` world with `wit-component`, for what Rust cannot
//! express (a loop with no calls, a start function that traps, a table bomb, a result that
//! points outside memory...).

use std::fmt::Write as _;
use std::time::Duration;

use wasmq::LoadError;

use crate::support::guests;

const MIB: u64 = 1024 * 1024;
const PAGE: u64 = 64 * 1024;
/// The memory cap of the entries that test it: small, so the bombs are cheap.
const CAP_MIB: u64 = 16;

/// How an entry's component is built.
pub enum Build {
    /// A Rust guest of guest-examples/rust, by name.
    Rust(&'static str),
    /// Bytes made here (WAT turned into a component, or raw bytes).
    Bytes(Vec<u8>),
}

impl Build {
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Build::Rust(name) => guests::rust_bytes(name),
            Build::Bytes(bytes) => bytes.clone(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Build::Rust(name) => format!("rust:{name}"),
            Build::Bytes(bytes) => format!("wat/bytes ({} B)", bytes.len()),
        }
    }
}

/// The per-attempt limits of a run-time entry, as a handler's section of the host's TOML.
#[derive(Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub memory_mib: u64,
    pub fuel: Option<u64>,
}

impl Limits {
    /// Room to meet its own fate on a busy machine: entries that must not time out get this.
    pub const ROOMY: Limits = Limits {
        timeout: Duration::from_secs(30),
        memory_mib: 64,
        fuel: None,
    };

    /// For entries whose expected end is their deadline.
    pub const SHORT: Limits = Limits {
        timeout: Duration::from_millis(300),
        memory_mib: 64,
        fuel: None,
    };

    pub const CAPPED: Limits = Limits {
        memory_mib: CAP_MIB,
        ..Limits::ROOMY
    };

    /// Room for a guest to build a result larger than a host takes from a handler, and
    /// than wasmtime lifts by default (128 MiB).
    pub const LARGE: Limits = Limits {
        memory_mib: 192,
        ..Limits::ROOMY
    };

    pub const FUELLED: Limits = Limits {
        fuel: Some(5_000_000),
        ..Limits::ROOMY
    };

    /// The handler's TOML section (`[handlers.<name>]`) for these limits.
    pub fn toml(&self, name: &str, path: &std::path::Path) -> String {
        let mut out = format!(
            "[handlers.{name:?}]\npath = {path:?}\ntimeout = \"{}ms\"\nmemory = \"{}MiB\"\n",
            self.timeout.as_millis(),
            self.memory_mib
        );
        if let Some(fuel) = self.fuel {
            writeln!(out, "fuel = {fuel}").unwrap();
        }
        out
    }
}

/// What the host must make of a run-time entry's job (one attempt, `max_attempts` 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Completed with exactly this result.
    Completed(Vec<u8>),
    /// Dead-lettered with this outcome class recorded (`last_outcome`, and in its history).
    Dead(&'static str),
}

/// An entry run by a real host.
pub struct RunEntry {
    pub name: &'static str,
    pub build: Build,
    pub payload: Vec<u8>,
    pub limits: Limits,
    pub expect: Expect,
}

/// An entry that `Runtime::load` must refuse.
pub struct LoadEntry {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    /// The `LoadError` variant, as named by [`load_error_kind`].
    pub refused_as: &'static str,
}

/// A stable name for each way a load is refused, for the table and its messages.
pub fn load_error_kind(err: &LoadError) -> &'static str {
    match err {
        LoadError::Io { .. } => "io",
        LoadError::NotWasm => "not_wasm",
        LoadError::CoreModule => "core_module",
        LoadError::Invalid(_) => "invalid",
        LoadError::MissingExport => "missing_export",
        LoadError::UnsupportedImport(_) => "unsupported_import",
        LoadError::WrongWorld(_) => "wrong_world",
        LoadError::Engine(_) => "engine",
        LoadError::IncompatibleWit { .. } => "incompatible_wit",
        LoadError::TooManyFunctions { .. } => "too_many_functions",
        LoadError::CompileMemory { .. } => "compile_memory",
        LoadError::CompileTimeout { .. } => "compile_timeout",
        LoadError::Compiler(_) => "compiler",
        _ => "other",
    }
}

/// A handler core module in WAT, turned into a `wasmq:job/handler` component.
///
/// `handle` receives the job record flattened (id, queue and handler as pointer and length,
/// the payload as pointer and length in locals 6 and 7, attempt in 8, max-attempts in 9) and
/// returns a pointer to its result: the result's discriminant at 16 (0 ok, 1 error), then an
/// ok list's pointer and length at 20 and 24, or an error's case (0 retry, 1 fail) at 20 and
/// its string's pointer and length at 24 and 28. `cabi_realloc` is a bump allocator from 1024.
pub struct Wat<'a> {
    /// Imports from `wasmq:job/context@0.1.0` (e.g. `(import ... "log" (func $log ...))`).
    pub imports: &'a str,
    /// The memory's declaration, exported as `memory`.
    pub memory: &'a str,
    /// Module fields: functions, tables, data, start.
    pub items: &'a str,
    /// The body of `handle`, leaving the result pointer on the stack.
    pub body: &'a str,
}

/// The end of a `handle` body that returns the payload as the result.
pub const RETURN_PAYLOAD: &str = "
    (i32.store8 (i32.const 16) (i32.const 0))
    (i32.store (i32.const 20) (local.get 6))
    (i32.store (i32.const 24) (local.get 7))
    (i32.const 16)";

const ONE_PAGE: &str = r#"(memory (export "memory") 1)"#;

impl Wat<'_> {
    pub fn component(&self) -> Vec<u8> {
        self.component_at("0.1.0")
    }

    /// The component, built against the WIT of wit/job.wit with its package at `version`.
    pub fn component_at(&self, version: &str) -> Vec<u8> {
        let Wat {
            imports,
            memory,
            items,
            body,
        } = self;
        let imports = imports.replace("@0.1.0", &format!("@{version}"));
        let wat = format!(
            r#"(module
              {imports}
              {memory}
              (global $heap (mut i32) (i32.const 1024))
              (func (export "cabi_realloc")
                (param $old i32) (param $old_size i32) (param $align i32) (param $size i32)
                (result i32)
                (local $ptr i32)
                (local.set $ptr
                  (i32.and
                    (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
                    (i32.sub (i32.const 0) (local.get $align))))
                (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
                (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
                  (then
                    (if (i32.eq
                          (memory.grow
                            (i32.add (i32.shr_u (local.get $size) (i32.const 16)) (i32.const 1)))
                          (i32.const -1))
                      (then unreachable))))
                (local.get $ptr))
              {items}
              (func (export "handle")
                (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
                {body}))"#
        );
        // The host's WIT, whatever its own version, restated at `version`.
        let wit: String = include_str!("../../../wit/job.wit")
            .lines()
            .map(|line| {
                if line.starts_with("package wasmq:job@") {
                    format!("package wasmq:job@{version};\n")
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        // Beside the WASI packages of wit/deps that the world imports.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("job.wit"), &wit).unwrap();
        copy_dir(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/deps"),
            &dir.path().join("deps"),
        );
        let mut resolve = wit_parser::Resolve::default();
        let (package, _) = resolve.push_dir(dir.path()).unwrap();
        let world = resolve.select_world(&[package], Some("handler")).unwrap();
        let mut module = wat::parse_str(&wat).unwrap();
        wit_component::embed_component_metadata(
            &mut module,
            &resolve,
            world,
            wit_component::StringEncoding::UTF8,
        )
        .unwrap();
        wit_component::ComponentEncoder::default()
            .module(&module)
            .unwrap()
            .validate(true)
            .encode()
            .unwrap()
    }
}

/// Nesting of [`loop_bomb`] in the corpus and `compile.rs`: 25 KB that take 1.8 GB and 22 s
/// to compile with wasmtime 48 on the 2-core test machine (4,000: 0.5 GB and 4.5 s; the
/// issue's reproduction used 20,000). The tests' memory limits stop it within a second or two.
pub const LOOP_BOMB_DEPTH: usize = 8_000;

/// Nesting of [`block_bomb`]: about 200 KB whose compile takes 40 s and little memory here
/// (50,000: 10 s and 72 MB). The tests' time limits stop it.
pub const BLOCK_BOMB_DEPTH: usize = 100_000;

/// A valid handler (its `handle` echoes the payload) with one more function, `depth` nested
/// `loop (param i32) (result i32)` blocks: a few bytes a level, and a compile whose memory
/// and time grow with the square of the depth.
pub fn loop_bomb(depth: usize) -> Vec<u8> {
    handler_with_nested(
        "(param i32) (result i32)\nlocal.get 0",
        "loop (param i32) (result i32)",
        depth,
    )
}

/// A valid handler with one more function of `depth` nested empty blocks: a compile whose
/// time grows with the square of the depth, its memory barely.
pub fn block_bomb(depth: usize) -> Vec<u8> {
    handler_with_nested("", "block", depth)
}

fn handler_with_nested(signature: &str, open: &str, depth: usize) -> Vec<u8> {
    let mut items = format!("(func $bomb {signature}\n");
    items.push_str(&format!("{open}\n").repeat(depth));
    items.push_str(&"end\n".repeat(depth));
    items.push(')');
    Wat {
        imports: "",
        memory: ONE_PAGE,
        items: &items,
        body: RETURN_PAYLOAD,
    }
    .component()
}

/// A handler whose `handle` runs `body` then returns the payload, in one page of memory.
fn handler_doing(body: &str) -> Vec<u8> {
    Wat {
        imports: "",
        memory: ONE_PAGE,
        items: "",
        body: &format!("{body}\n{RETURN_PAYLOAD}"),
    }
    .component()
}

fn handler_with(items: &str, body: &str) -> Vec<u8> {
    Wat {
        imports: "",
        memory: ONE_PAGE,
        items,
        body: &format!("{body}\n{RETURN_PAYLOAD}"),
    }
    .component()
}

/// Functions in the gigantic entry: twice what the host compiles in one component
/// (`MAX_FUNCTIONS` in host/src/runtime/size.rs, 100,000), a fifth of wasmparser's limit.
pub const GIGANTIC_FUNCTIONS: usize = 200_000;
/// Functions in the large entry that the host must compile and run: more than a Python or
/// JavaScript handler defines (about 13,000), cheap enough to compile on every test run.
pub const MANY_FUNCTIONS: usize = 20_000;

/// A handler with `n` more tiny, distinct functions (wasmtime compiles every function of a
/// module, called or not).
pub fn gigantic_handler(n: usize) -> Vec<u8> {
    let mut items = String::with_capacity(n * 40);
    for i in 0..n {
        writeln!(items, "(func (result i32) (i32.const {i}))").unwrap();
    }
    handler_with(&items, "")
}

/// A component holding a core module whose function section declares `count` functions: the
/// header and the count, with no code after it.
fn component_declaring_functions(count: u32) -> Vec<u8> {
    fn leb(mut n: u32, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut functions = Vec::new();
    leb(count, &mut functions);
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    module.extend_from_slice(&[0x01, 0x04, 0x01, 0x60, 0x00, 0x00]);
    module.push(0x03);
    leb(functions.len() as u32, &mut module);
    module.extend_from_slice(&functions);
    let mut component = b"\0asm\x0d\0\x01\0".to_vec();
    component.push(0x01);
    leb(module.len() as u32, &mut component);
    component.extend_from_slice(&module);
    component
}

/// Everything `Runtime::load` must refuse, with the reason.
pub fn load_entries() -> Vec<LoadEntry> {
    let echo = guests::rust_bytes("echo");
    let wat = |text: &str| wat::parse_str(text).unwrap();
    let entry = |name, bytes, refused_as| LoadEntry {
        name,
        bytes,
        refused_as,
    };
    vec![
        entry(
            "random bytes",
            b"\x13\x37 not wasm at all".to_vec(),
            "not_wasm",
        ),
        entry("empty file", Vec::new(), "not_wasm"),
        entry(
            "core module",
            wat(r#"(module (func (export "handle")))"#),
            "core_module",
        ),
        entry(
            "truncated component",
            echo[..echo.len() / 2].to_vec(),
            "invalid",
        ),
        entry(
            "component header alone (an empty component)",
            echo[..8].to_vec(),
            "missing_export",
        ),
        entry(
            "component of an unknown binary version",
            b"\0asm\x0e\0\x01\0".to_vec(),
            "invalid",
        ),
        entry(
            "component of a CLI world (exports run, not handle)",
            wat(r#"(component
                (core module $m (func (export "run") (result i32) (i32.const 0)))
                (core instance $i (instantiate $m))
                (func $run (result (result)) (canon lift (core func $i "run")))
                (instance $cli (export "run" (func $run)))
                (export "wasi:cli/run@0.2.0" (instance $cli)))"#),
            "missing_export",
        ),
        entry(
            "handle with the wrong signature",
            wat(r#"(component
                (core module $m (func (export "f")))
                (core instance $i (instantiate $m))
                (func $f (canon lift (core func $i "f")))
                (export "handle" (func $f)))"#),
            "wrong_world",
        ),
        entry(
            "handle that is not a function",
            wat(r#"(component
                (core module $m)
                (export "handle" (core module $m)))"#),
            "wrong_world",
        ),
        entry(
            "unresolvable import",
            wat(r#"(component
                (import "acme:billing/ledger@1.0.0" (instance (export "charge" (func))))
                (core module $m (func (export "f")))
                (core instance $i (instantiate $m))
                (func $f (canon lift (core func $i "f")))
                (export "handle" (func $f)))"#),
            "unsupported_import",
        ),
        entry(
            "WASI import of a function the host lacks",
            wat(r#"(component
                (import "wasi:cli/environment@0.2.0"
                  (instance (export "get-secrets" (func (result string)))))
                (core module $m (func (export "f")))
                (core instance $i (instantiate $m))
                (func $f (canon lift (core func $i "f")))
                (export "handle" (func $f)))"#),
            "unsupported_import",
        ),
        entry(
            "built against an incompatible wasmq:job",
            Wat {
                imports: r#"(import "wasmq:job/context@0.1.0" "progress"
                              (func $progress (param i32)))"#,
                memory: ONE_PAGE,
                items: "",
                body: &format!("(call $progress (i32.const 1)) {RETURN_PAYLOAD}"),
            }
            .component_at("0.2.0"),
            "incompatible_wit",
        ),
        entry(
            "table larger than the host's pool holds",
            handler_with("(table 200000 funcref)", ""),
            "invalid",
        ),
        entry(
            "more memories than the host's pool holds",
            handler_with(
                "(memory $a 1) (memory $b 1) (memory $c 1) (memory $d 1) (memory $e 1)",
                "",
            ),
            "invalid",
        ),
        entry(
            "gigantic function count",
            gigantic_handler(GIGANTIC_FUNCTIONS),
            "too_many_functions",
        ),
        entry(
            "function count over wasmparser's limit",
            component_declaring_functions(1_000_001),
            "too_many_functions",
        ),
        entry(
            "compile bomb: one function of nested loops (memory)",
            loop_bomb(LOOP_BOMB_DEPTH),
            "compile_memory",
        ),
        entry(
            "compile bomb: one function of nested empty blocks (time)",
            block_bomb(BLOCK_BOMB_DEPTH),
            "compile_timeout",
        ),
    ]
}

/// Everything a real host must run to its class. `tcp_probe_addr` is where the TCP probe is
/// told to connect (a listener the test owns, so that a connection that got through shows).
pub fn run_entries(tcp_probe_addr: &str) -> Vec<RunEntry> {
    use Build::{Bytes, Rust};
    use Expect::{Completed, Dead};
    let ok = |bytes: &[u8]| Completed(bytes.to_vec());
    let denied = || ok(b"denied");
    let entry = |name, build, payload: &[u8], limits, expect| RunEntry {
        name,
        build,
        payload: payload.to_vec(),
        limits,
        expect,
    };
    let cap_pages = CAP_MIB * MIB / PAGE;
    let tight_loop = handler_doing("(loop $spin (br $spin)) unreachable");
    let mut entries = vec![
        // CPU
        entry(
            "infinite-loop",
            Rust("infinite-loop"),
            b"",
            Limits::SHORT,
            Dead("timeout"),
        ),
        entry(
            "tight-br-loop",
            Bytes(tight_loop.clone()),
            b"",
            Limits::SHORT,
            Dead("timeout"),
        ),
        entry(
            "infinite-loop-fuel",
            Rust("infinite-loop"),
            b"",
            Limits::FUELLED,
            Dead("out_of_fuel"),
        ),
        entry(
            "tight-br-loop-fuel",
            Bytes(tight_loop),
            b"",
            Limits::FUELLED,
            Dead("out_of_fuel"),
        ),
        entry(
            "clock-spin",
            Rust("hostile"),
            b"clock-spin",
            Limits::SHORT,
            Dead("timeout"),
        ),
        entry(
            "monotonic-clock-spin",
            Rust("hostile"),
            b"instant-spin",
            Limits::SHORT,
            Dead("timeout"),
        ),
        entry(
            "sleep-in-host-call",
            Rust("hostile"),
            b"sleep",
            Limits::SHORT,
            Dead("timeout"),
        ),
        // Memory, tables, stack
        entry(
            "memory-bomb",
            Rust("memory-bomb"),
            b"",
            Limits::CAPPED,
            Dead("memory_limit"),
        ),
        entry(
            "memory-grow-to-the-cap",
            Bytes(handler_doing(&format!(
                "(if (i32.eq (memory.grow (i32.sub (i32.const {cap_pages}) (memory.size)))
                            (i32.const -1))
                   (then unreachable))"
            ))),
            b"at the cap",
            Limits::CAPPED,
            ok(b"at the cap"),
        ),
        entry(
            "memory-grow-one-page-past-the-cap",
            Bytes(handler_doing(&format!(
                "(drop (memory.grow (i32.sub (i32.const {}) (memory.size))))",
                cap_pages + 1
            ))),
            b"",
            Limits::CAPPED,
            Dead("memory_limit"),
        ),
        entry(
            "initial-memory-over-the-cap",
            Bytes(
                Wat {
                    imports: "",
                    memory: &format!(r#"(memory (export "memory") {})"#, 2 * cap_pages),
                    items: "",
                    body: RETURN_PAYLOAD,
                }
                .component(),
            ),
            b"",
            Limits::CAPPED,
            Dead("memory_limit"),
        ),
        entry(
            "huge-data-segment",
            Bytes(
                Wat {
                    imports: "",
                    memory: &format!(r#"(memory (export "memory") {cap_pages})"#),
                    items: &format!(
                        r#"(data (i32.const {}) "{}")"#,
                        MIB,
                        "d".repeat((CAP_MIB - 2) as usize * MIB as usize)
                    ),
                    body: RETURN_PAYLOAD,
                }
                .component(),
            ),
            b"data",
            Limits::CAPPED,
            ok(b"data"),
        ),
        entry(
            "table-growth-bomb",
            Bytes(handler_with(
                "(table $t 1 funcref)",
                "(loop $grow
                   (drop (table.grow $t (ref.null func) (i32.const 10000)))
                   (br $grow))",
            )),
            b"",
            Limits::ROOMY,
            Dead("memory_limit"),
        ),
        entry(
            "deep-recursion",
            Rust("deep-recursion"),
            b"",
            Limits::ROOMY,
            Dead("stack_overflow"),
        ),
        entry(
            "recursion-through-call-indirect",
            Bytes(handler_with(
                "(type $t (func (param i32) (result i32)))
                 (table 1 funcref)
                 (elem (i32.const 0) $rec)
                 (func $rec (type $t)
                   (i32.add (call_indirect (type $t) (local.get 0) (i32.const 0))
                            (i32.const 1)))",
                "(drop (call $rec (i32.const 0)))",
            )),
            b"",
            Limits::ROOMY,
            Dead("stack_overflow"),
        ),
        // Traps
        entry("panic", Rust("panic"), b"", Limits::ROOMY, Dead("trap")),
        entry(
            "unreachable",
            Bytes(handler_doing("unreachable")),
            b"",
            Limits::ROOMY,
            Dead("trap"),
        ),
        entry(
            "integer-divide-by-zero",
            Bytes(handler_doing(
                "(drop (i32.div_u (local.get 8) (i32.sub (local.get 8) (local.get 8))))",
            )),
            b"",
            Limits::ROOMY,
            Dead("trap"),
        ),
        entry(
            "trap-in-start-function",
            Bytes(handler_with("(func $boom unreachable) (start $boom)", "")),
            b"",
            Limits::ROOMY,
            Dead("trap"),
        ),
        entry(
            "data-segment-out-of-bounds",
            Bytes(handler_with(r#"(data (i32.const 0x7fff0000) "x")"#, "")),
            b"",
            Limits::ROOMY,
            Dead("trap"),
        ),
        // `exit(n)`: 0 completes with an empty result, any other status fails for good.
        entry(
            "exit",
            Rust("hostile"),
            b"exit",
            Limits::ROOMY,
            Dead("fail"),
        ),
        entry(
            "exit-zero",
            Rust("hostile"),
            b"exit:0",
            Limits::ROOMY,
            ok(b""),
        ),
        entry(
            "abort",
            Rust("hostile"),
            b"abort",
            Limits::ROOMY,
            Dead("trap"),
        ),
        // What the guest hands back
        entry(
            "result-outside-memory",
            Bytes(
                Wat {
                    imports: "",
                    memory: ONE_PAGE,
                    items: "",
                    body: "(i32.store8 (i32.const 16) (i32.const 0))
                           (i32.store (i32.const 20) (i32.const 0x7fff0000))
                           (i32.store (i32.const 24) (i32.const 0x7fffffff))
                           (i32.const 16)",
                }
                .component(),
            ),
            b"",
            Limits::ROOMY,
            Dead("trap"),
        ),
        entry(
            "non-utf8-error-string",
            Bytes(
                Wat {
                    imports: "",
                    memory: ONE_PAGE,
                    items: r#"(data (i32.const 100) "\ff\fe\fd")"#,
                    body: "(i32.store8 (i32.const 16) (i32.const 1))
                           (i32.store8 (i32.const 20) (i32.const 1))
                           (i32.store (i32.const 24) (i32.const 100))
                           (i32.store (i32.const 28) (i32.const 3))
                           (i32.const 16)",
                }
                .component(),
            ),
            b"",
            Limits::ROOMY,
            Dead("trap"),
        ),
        entry(
            "huge-result",
            Rust("hostile"),
            b"huge-result:8388608",
            Limits::ROOMY,
            Dead("result_too_large"),
        ),
        entry(
            "huge-error-string",
            Rust("hostile"),
            b"huge-error:4194304",
            Limits::ROOMY,
            Dead("fail"),
        ),
        // Past what a host takes from a handler at all. 136 MiB: it used to be a `trap`,
        // wasmtime refusing to lift over 128 MiB.
        entry(
            "result-past-what-a-host-takes",
            Rust("hostile"),
            format!("huge-result:{}", 136 * MIB).as_bytes(),
            Limits::LARGE,
            Dead("result_too_large"),
        ),
        entry(
            "error-past-what-a-host-takes",
            Rust("hostile"),
            format!("huge-error:{}", wasmq::MAX_RETURNED_BYTES + 1).as_bytes(),
            Limits::LARGE,
            Dead("result_too_large"),
        ),
        entry(
            "huge-stdout",
            Rust("stdout-flood"),
            b"",
            Limits::ROOMY,
            ok(b"flooded"),
        ),
        entry(
            "million-log-calls",
            Rust("hostile"),
            b"log-flood:1000000",
            Limits::ROOMY,
            ok(b"logged 1000000"),
        ),
        entry(
            "a-hundred-thousand-empty-lines",
            Rust("hostile"),
            b"empty-lines:100000",
            Limits::ROOMY,
            ok(b"printed 100000"),
        ),
        // One get-random-bytes call: the host fills the bytes outside the memory cap, so it
        // refuses a call over 1 MiB (a trap) rather than allocate 64 MiB for it.
        entry(
            "random-bytes-at-the-limit",
            Rust("hostile"),
            b"random:1048576",
            Limits::ROOMY,
            ok(b"got 1048576"),
        ),
        entry(
            "random-bytes-64-mib",
            Rust("hostile"),
            b"random:67108864",
            Limits::ROOMY,
            Dead("trap"),
        ),
        entry(
            "largest-payload-echo",
            Rust("echo"),
            &vec![b'p'; wasmq::queue::DEFAULT_MAX_PAYLOAD_BYTES as usize],
            Limits::ROOMY,
            ok(&vec![
                b'p';
                wasmq::queue::DEFAULT_MAX_PAYLOAD_BYTES as usize
            ]),
        ),
        // Compiler stress
        entry(
            "many-functions",
            Bytes(gigantic_handler(MANY_FUNCTIONS)),
            b"compiled",
            Limits::ROOMY,
            ok(b"compiled"),
        ),
        entry(
            "deeply-nested-blocks",
            Bytes(handler_doing(&format!(
                "{}{}",
                "block\n".repeat(20_000),
                "end\n".repeat(20_000)
            ))),
            b"nested",
            Limits::ROOMY,
            ok(b"nested"),
        ),
    ];
    // The sandbox: each ambient capability, refused.
    for (name, attack) in [
        ("read-env", "env".to_string()),
        ("read-args", "args".to_string()),
        ("open-file", "file-read".to_string()),
        ("create-file", "file-write".to_string()),
        ("list-root-dir", "dir-list".to_string()),
        ("tcp-connect", format!("tcp-connect:{tcp_probe_addr}")),
        ("udp-bind", "udp-bind".to_string()),
        ("dns-lookup", "dns".to_string()),
    ] {
        entries.push(entry(
            name,
            Rust("hostile"),
            attack.as_bytes(),
            Limits::ROOMY,
            denied(),
        ));
    }
    entries
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}
