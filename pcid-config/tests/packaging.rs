//! The Redox packaging files install what pcid-spawner looks for.

use std::path::PathBuf;

fn repo_file(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn recipe_installs_driver_and_match_file() {
    let recipe: toml::Table = repo_file("redox/recipe.toml")
        .parse()
        .expect("recipe is TOML");
    let build = recipe
        .get("build")
        .and_then(|b| b.as_table())
        .expect("[build]");
    assert_eq!(
        build.get("template").and_then(|t| t.as_str()),
        Some("custom")
    );
    let script = build
        .get("script")
        .and_then(|s| s.as_str())
        .expect("script");
    assert!(
        script.contains("cookbook_cargo --features redox"),
        "{script}"
    );
    assert!(script.contains("/usr/lib/drivers/gpud\""), "{script}");
    assert!(
        script.contains("pcid-config/gpud.toml\" \"${COOKBOOK_STAGE}/usr/lib/pcid.d/gpud.toml\"")
    );
    // cookbook_cargo runs `cargo install --locked`: the lock file must be committed.
    assert!(!repo_file("Cargo.lock").is_empty());
}

#[test]
fn filesystem_config_adds_the_package() {
    let cfg: toml::Table = repo_file("redox/config/x86_64/gpud.toml")
        .parse()
        .expect("TOML");
    let packages = cfg
        .get("packages")
        .and_then(|p| p.as_table())
        .expect("[packages]");
    assert!(packages.contains_key("gpud"));
}

#[test]
fn match_file_command_is_the_installed_binary() {
    let parsed = pcid_config::gpud_config().expect("gpud.toml");
    for entry in &parsed.config.drivers {
        assert_eq!(entry.program(), "/usr/lib/drivers/gpud");
    }
}
