//! The pcid driver-match format (`/usr/lib/pcid.d/*.toml`) and pcid's matcher.
//!
//! Owns: parsing every key pcid knows (`name`, `class`, `subclass`, `interface`, `ids`,
//! `vendor`, `device`, `device_id_range`, `command`), reporting keys pcid would silently ignore
//! as warnings, and matching a [`FullDeviceId`] exactly as `pcid-spawner` does (first entry
//! whose constraints all hold wins; `ids` overrides `vendor`/`device`; the range end is
//! exclusive; a bare command name resolves to `/usr/lib/drivers/<name>`).
//!
//! Must not: talk to pcid or touch devices. Where pcid would panic or truncate (a vendor key
//! that is not hex, an id above `0xffff`, an empty `command`), this parser returns a typed
//! error instead, so a config that loads here never crashes the spawner.

use std::collections::BTreeMap;
use std::ops::Range;

use thiserror::Error;
use toml::Value;

use crate::protocol::FullDeviceId;

/// Where pcid-spawner looks for a driver whose `command[0]` is a bare name.
pub const DRIVER_DIR: &str = "/usr/lib/drivers";

/// The keys pcid's `DriverConfig` deserializes; anything else is ignored by pcid.
const KNOWN_KEYS: [&str; 9] = [
    "name",
    "class",
    "subclass",
    "interface",
    "ids",
    "vendor",
    "device",
    "device_id_range",
    "command",
];

/// A config document: the `[[drivers]]` entries in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// Entries in the order pcid tries them.
    pub drivers: Vec<DriverConfig>,
}

/// One `[[drivers]]` entry. `None` means "no constraint".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DriverConfig {
    /// Informational name.
    pub name: Option<String>,
    /// PCI base class that must match.
    pub class: Option<u8>,
    /// PCI subclass that must match.
    pub subclass: Option<u8>,
    /// Programming interface that must match.
    pub interface: Option<u8>,
    /// Vendor → device ids; when present, `vendor` and `device` are ignored.
    pub ids: Option<BTreeMap<u16, Vec<u16>>>,
    /// Vendor id that must match (only without `ids`).
    pub vendor: Option<u16>,
    /// Device id that must match (only without `ids`).
    pub device: Option<u16>,
    /// Device ids `start..end` (end exclusive).
    pub device_id_range: Option<Range<u16>>,
    /// argv of the driver; never empty.
    pub command: Vec<String>,
}

/// A key pcid would silently ignore: almost always a typo or a stale option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigWarning {
    /// An unknown key at the top level of the document.
    UnknownTopLevelKey {
        /// The key as written.
        key: String,
    },
    /// An unknown key inside `[[drivers]]` entry `entry` (0-based).
    UnknownKey {
        /// Index of the entry.
        entry: usize,
        /// The key as written.
        key: String,
    },
    /// An unknown key inside an entry's `device_id_range` table.
    UnknownRangeKey {
        /// Index of the entry.
        entry: usize,
        /// The key as written.
        key: String,
    },
}

/// Why a config document was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The text is not TOML.
    #[error("not valid TOML: {0}")]
    Syntax(String),
    /// The document has no `drivers` array of tables.
    #[error("missing `drivers` array of tables")]
    MissingDrivers,
    /// `drivers[entry]` is not a table.
    #[error("drivers[{entry}] is not a table")]
    EntryNotTable {
        /// Index of the entry.
        entry: usize,
    },
    /// A key has the wrong TOML type or an out-of-range value.
    #[error("drivers[{entry}].{key}: expected {expected}, found {found}")]
    BadValue {
        /// Index of the entry.
        entry: usize,
        /// The offending key (dotted for nested values).
        key: String,
        /// What pcid expects.
        expected: &'static str,
        /// What was found, rendered as TOML.
        found: String,
    },
    /// A vendor key of `ids` is not a 16-bit hex number.
    #[error("drivers[{entry}].ids: vendor key {key:?} is not a 16-bit hex number")]
    BadVendorKey {
        /// Index of the entry.
        entry: usize,
        /// The key as written.
        key: String,
    },
    /// The required `command` key is missing.
    #[error("drivers[{entry}]: missing `command`")]
    MissingCommand {
        /// Index of the entry.
        entry: usize,
    },
    /// `command` is an empty array (pcid would index `command[0]` and panic).
    #[error("drivers[{entry}]: `command` is empty")]
    EmptyCommand {
        /// Index of the entry.
        entry: usize,
    },
}

/// A parsed document plus the keys pcid would ignore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The config.
    pub config: Config,
    /// Unknown keys, in document order.
    pub warnings: Vec<ConfigWarning>,
}

impl Config {
    /// Parses one document (pcid concatenates all files of a directory into one).
    pub fn parse(text: &str) -> Result<Parsed, ConfigError> {
        let root: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Syntax(e.message().to_owned()))?;
        let mut warnings = Vec::new();
        for key in root.keys().filter(|k| k.as_str() != "drivers") {
            warnings.push(ConfigWarning::UnknownTopLevelKey { key: key.clone() });
        }
        let Some(Value::Array(entries)) = root.get("drivers") else {
            return Err(ConfigError::MissingDrivers);
        };
        let mut drivers = Vec::with_capacity(entries.len());
        for (entry, value) in entries.iter().enumerate() {
            let Value::Table(table) = value else {
                return Err(ConfigError::EntryNotTable { entry });
            };
            drivers.push(DriverConfig::from_table(entry, table, &mut warnings)?);
        }
        Ok(Parsed {
            config: Config { drivers },
            warnings,
        })
    }

    /// The entry pcid-spawner would pick for `id`: the first whose constraints all match.
    pub fn find(&self, id: &FullDeviceId) -> Option<&DriverConfig> {
        self.drivers.iter().find(|d| d.matches(id))
    }
}

impl DriverConfig {
    fn from_table(
        entry: usize,
        table: &toml::Table,
        warnings: &mut Vec<ConfigWarning>,
    ) -> Result<Self, ConfigError> {
        for key in table.keys().filter(|k| !KNOWN_KEYS.contains(&k.as_str())) {
            warnings.push(ConfigWarning::UnknownKey {
                entry,
                key: key.clone(),
            });
        }
        let field = Field { entry, table };
        let command = match table.get("command") {
            None => return Err(ConfigError::MissingCommand { entry }),
            Some(v) => field.string_array("command", v)?,
        };
        if command.is_empty() {
            return Err(ConfigError::EmptyCommand { entry });
        }
        Ok(DriverConfig {
            name: field.opt_string("name")?,
            class: field.opt_int("class")?,
            subclass: field.opt_int("subclass")?,
            interface: field.opt_int("interface")?,
            ids: field.opt_ids()?,
            vendor: field.opt_int("vendor")?,
            device: field.opt_int("device")?,
            device_id_range: field.opt_range(warnings)?,
            command,
        })
    }

    /// Whether pcid would hand a function with `id` to this entry.
    pub fn matches(&self, id: &FullDeviceId) -> bool {
        let eq = |want: Option<u8>, have: u8| want.is_none_or(|w| w == have);
        if !eq(self.class, id.class)
            || !eq(self.subclass, id.subclass)
            || !eq(self.interface, id.interface)
        {
            return false;
        }
        let ids_ok = match &self.ids {
            Some(ids) => ids
                .get(&id.vendor_id)
                .is_some_and(|devices| devices.contains(&id.device_id)),
            None => {
                self.vendor.is_none_or(|v| v == id.vendor_id)
                    && self.device.is_none_or(|d| d == id.device_id)
            }
        };
        ids_ok
            && self
                .device_id_range
                .as_ref()
                .is_none_or(|r| r.contains(&id.device_id))
    }

    /// The program pcid-spawner executes: `command[0]`, resolved under [`DRIVER_DIR`] when
    /// it is a bare name.
    pub fn program(&self) -> String {
        // `from_table` rejects an empty command; a hand-built entry without one resolves to
        // the driver directory itself rather than panicking.
        let first = self.command.first().map(String::as_str).unwrap_or("");
        resolve_program(first)
    }
}

/// Resolves a driver program name the way pcid-spawner does.
pub fn resolve_program(name: &str) -> String {
    if name.starts_with('/') {
        name.to_owned()
    } else {
        format!("{DRIVER_DIR}/{name}")
    }
}

/// Typed access to one entry's keys with error context.
struct Field<'a> {
    entry: usize,
    table: &'a toml::Table,
}

impl Field<'_> {
    fn bad(&self, key: &str, expected: &'static str, found: &Value) -> ConfigError {
        ConfigError::BadValue {
            entry: self.entry,
            key: key.to_owned(),
            expected,
            found: found.to_string(),
        }
    }

    fn int<T: TryFrom<i64>>(
        &self,
        key: &str,
        v: &Value,
        expected: &'static str,
    ) -> Result<T, ConfigError> {
        v.as_integer()
            .and_then(|i| T::try_from(i).ok())
            .ok_or_else(|| self.bad(key, expected, v))
    }

    fn opt_int<T: TryFrom<i64> + IntName>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        self.table
            .get(key)
            .map(|v| self.int(key, v, T::NAME))
            .transpose()
    }

    fn opt_string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        self.table
            .get(key)
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| self.bad(key, "a string", v))
            })
            .transpose()
    }

    fn string_array(&self, key: &str, v: &Value) -> Result<Vec<String>, ConfigError> {
        let arr = v
            .as_array()
            .ok_or_else(|| self.bad(key, "an array of strings", v))?;
        arr.iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| self.bad(key, "an array of strings", v))
            })
            .collect()
    }

    fn opt_ids(&self) -> Result<Option<BTreeMap<u16, Vec<u16>>>, ConfigError> {
        let Some(v) = self.table.get("ids") else {
            return Ok(None);
        };
        let table = v
            .as_table()
            .ok_or_else(|| self.bad("ids", "a table of vendor = [devices]", v))?;
        let mut ids = BTreeMap::new();
        for (vendor_key, devices) in table {
            let vendor = parse_vendor_key(vendor_key).ok_or_else(|| ConfigError::BadVendorKey {
                entry: self.entry,
                key: vendor_key.clone(),
            })?;
            let key = format!("ids.{vendor_key}");
            let list = devices
                .as_array()
                .ok_or_else(|| self.bad(&key, "an array of u16", devices))?;
            let list: Vec<u16> = list
                .iter()
                .map(|d| self.int(&key, d, "an array of u16"))
                .collect::<Result<_, _>>()?;
            // Two spellings of one vendor (`0x1af4` and `1AF4`) merge, as they would match
            // the same functions in pcid too.
            ids.entry(vendor).or_insert_with(Vec::new).extend(list);
        }
        Ok(Some(ids))
    }

    fn opt_range(
        &self,
        warnings: &mut Vec<ConfigWarning>,
    ) -> Result<Option<Range<u16>>, ConfigError> {
        let Some(v) = self.table.get("device_id_range") else {
            return Ok(None);
        };
        let expected = "a table { start = u16, end = u16 }";
        let t = v
            .as_table()
            .ok_or_else(|| self.bad("device_id_range", expected, v))?;
        for key in t.keys().filter(|k| *k != "start" && *k != "end") {
            warnings.push(ConfigWarning::UnknownRangeKey {
                entry: self.entry,
                key: key.clone(),
            });
        }
        let get = |k: &str| -> Result<u16, ConfigError> {
            let key = format!("device_id_range.{k}");
            let v = t.get(k).ok_or_else(|| self.bad(&key, "a u16", v))?;
            self.int(&key, v, "a u16")
        };
        Ok(Some(get("start")?..get("end")?))
    }
}

/// Names used in error messages for the integer widths pcid deserializes.
trait IntName {
    const NAME: &'static str;
}
impl IntName for u8 {
    const NAME: &'static str = "a u8";
}
impl IntName for u16 {
    const NAME: &'static str = "a u16";
}

/// pcid strips a leading `0x` and parses the rest as hex.
fn parse_vendor_key(key: &str) -> Option<u16> {
    let digits = key.strip_prefix("0x").unwrap_or(key);
    if digits.is_empty() || digits.len() > 4 {
        return None;
    }
    u16::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests;
