//! Build steps of the C example handlers (see Cargo.toml):
//!
//! - `wasmq-c-tools bindings <wit-dir> <world> <out-dir>`: what `wit-bindgen c <wit-dir>
//!   --world <world> --out-dir <out-dir>` writes (`<world>.c`, `<world>.h`,
//!   `<world>_component_type.o`), with the same generator and default options.
//! - `wasmq-c-tools adapter <path>`: writes the WASI preview1 reactor adapter to `path`.

use std::path::Path;

use anyhow::{Context, bail};
use wit_bindgen_core::wit_parser::Resolve;
use wit_bindgen_core::{Files, WorldGenerator};

fn bindings(wit: &Path, world: &str, out_dir: &Path) -> anyhow::Result<()> {
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_path(wit)
        .with_context(|| format!("reading WIT from {}", wit.display()))?;
    let world = resolve.select_world(&[package], Some(world))?;
    let mut files = Files::default();
    let mut generator: Box<dyn WorldGenerator> = wit_bindgen_c::Opts::default().build();
    generator.generate(&mut resolve, world, &mut files)?;
    std::fs::create_dir_all(out_dir)?;
    for (name, contents) in files.iter() {
        let path = out_dir.join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["bindings", wit, world, out_dir] => bindings(Path::new(wit), world, Path::new(out_dir)),
        ["adapter", path] => std::fs::write(
            path,
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )
        .with_context(|| format!("writing {path}")),
        _ => bail!("usage: wasmq-c-tools bindings <wit-dir> <world> <out-dir> | adapter <path>"),
    }
}
