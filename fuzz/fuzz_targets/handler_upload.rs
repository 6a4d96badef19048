//! Handler upload validation: `Runtime::load`, the check every `.wasm` goes through before it
//! is accepted (`Registry::deploy` for `wasmq handler deploy` and `POST /api/handlers/{name}`,
//! and each host loading a handler): magic number, core module or component, the `wasmq:job`
//! version of its imports, the function count, then compiling (Cranelift), the `handle` export
//! and linking against the host.
//!
//! The first byte picks the input:
//! - even: the rest is the upload's bytes as they are (the seeds are real handler components,
//!   so mutations stay close to what a toolchain makes);
//! - odd: the rest drives wasm-smith, which writes a core module with the exports of the
//!   handler world (`memory`, `cabi_realloc`, `handle`) and random code, free to import
//!   `context.log` and `context.progress`; wit-component makes it a component against
//!   wit/job.wit, as a toolchain would.
//!
//! Properties: no input panics; a refused upload is an error; an accepted one runs as a job
//! (instantiate and call `handle`, under a 20 ms deadline and a 16 MiB memory cap) and ends in
//! an `Outcome`, whatever its code does. Inputs are at most 64 KiB (fuzz/run.sh's `-max_len`)
//! and wasm-smith modules small, so that each compile stays in milliseconds.
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use wasmq::{JobInput, JobLimits, Runtime, RuntimeConfig};

/// One runtime for the whole run, as a host has: building the engine per input would
/// dominate. Pooling is off so that nothing is reserved up front.
static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    Runtime::new(RuntimeConfig {
        pooling: false,
        ..RuntimeConfig::default()
    })
    .unwrap_or_else(|err| panic!("the runtime does not start: {err}"))
});

static TOKIO: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap_or_else(|err| panic!("tokio does not start: {err}"))
});

/// The handler world's core exports and the imports a generated module may use.
const SHAPE: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) unreachable)
  (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    unreachable))"#;
const IMPORTS: &str = r#"(module
  (import "wasmq:job/context@0.1.3" "log" (func (param i32 i32 i32)))
  (import "wasmq:job/context@0.1.3" "progress" (func (param i32))))"#;

struct Shapes {
    exports: Vec<u8>,
    imports: Vec<u8>,
    resolve: wit_parser::Resolve,
    world: wit_parser::WorldId,
}

static SHAPES: LazyLock<Shapes> = LazyLock::new(|| {
    let mut resolve = wit_parser::Resolve::default();
    // wit/job.wit with the WASI packages of wit/deps that its world imports (since 0.1.2).
    let (package, _) = resolve
        .push_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../wit"))
        .unwrap_or_else(|err| panic!("wit/: {err:?}"));
    let world = resolve
        .select_world(&[package], Some("handler"))
        .unwrap_or_else(|err| panic!("wit/job.wit: {err:?}"));
    let wasm = |text: &str| wat::parse_str(text).unwrap_or_else(|err| panic!("{err}"));
    Shapes {
        exports: wasm(SHAPE),
        imports: wasm(IMPORTS),
        resolve,
        world,
    }
});

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        upload(rest);
    } else if let Some(component) = generated_handler(rest) {
        upload(&component);
    }
});

fn upload(bytes: &[u8]) {
    let handler = match RUNTIME.load(bytes) {
        Ok(handler) => handler,
        Err(err) => {
            assert!(!err.to_string().is_empty());
            return;
        }
    };
    let job = JobInput {
        id: "fuzz".into(),
        queue: "fuzz".into(),
        handler: "fuzz".into(),
        payload: b"{}".to_vec(),
        attempt: 1,
        max_attempts: 1,
    };
    let limits = JobLimits {
        timeout: Duration::from_millis(20),
        memory: 16 * 1024 * 1024,
        fuel: None,
    };
    // Whatever the code does, the attempt ends as an Outcome: a panic aborts the run.
    let report = TOKIO.block_on(RUNTIME.run(&handler, job, &limits));
    assert!(report.peak_memory <= limits.memory, "{report:?}");
}

/// A handler component around a wasm-smith module, or `None` when the input runs out or
/// wit-component refuses the module (it checks the exports' types, as a toolchain's would).
fn generated_handler(data: &[u8]) -> Option<Vec<u8>> {
    let shapes = &*SHAPES;
    let mut config = wasm_smith::Config {
        exports: Some(shapes.exports.clone()),
        available_imports: Some(shapes.imports.clone()),
        max_funcs: 8,
        max_instructions: 200,
        // Only the exported memory: wasm-smith adds the shape's exports beyond its limits.
        max_memories: 0,
        max_tables: 2,
        max_data_segments: 4,
        max_element_segments: 4,
        max_memory32_bytes: 1 << 20,
        // What the host's engine compiles: wasmtime without its GC feature refuses
        // externref ("gc types"), and has no threads, exceptions or memory64 here. Without
        // them, generated handlers load and run (checked: 200 of 200 encoded, and 30 of 30
        // tried loaded and ended in a trap, a timeout or a result).
        reference_types_enabled: false,
        gc_enabled: false,
        threads_enabled: false,
        exceptions_enabled: false,
        memory64_enabled: false,
        ..wasm_smith::Config::default()
    };
    config.min_funcs = 0;
    let module = wasm_smith::Module::new(config, &mut Unstructured::new(data)).ok()?;
    let mut bytes = module.to_bytes();
    wit_component::embed_component_metadata(
        &mut bytes,
        &shapes.resolve,
        shapes.world,
        wit_component::StringEncoding::UTF8,
    )
    .ok()?;
    wit_component::ComponentEncoder::default()
        .module(&bytes)
        .ok()?
        .validate(true)
        .encode()
        .ok()
}
