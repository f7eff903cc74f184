// Durations and sizes, as every call of this SDK takes them. A duration is a number of
// milliseconds (as setTimeout takes one) or a string with a unit, as the CLI takes it: "500ms",
// "30s", "2m", "1h". A size is a number of bytes or a string with a unit: "512m", "1g" (k, m, g,
// t: powers of 1024).
const NUMBER = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/;
const DURATION_UNITS = { ms: 1, s: 1000, sec: 1000, m: 60_000, min: 60_000, h: 3_600_000 };
const SIZE_UNITS = { "": 1, b: 1 };
["k", "m", "g", "t"].forEach((u, i) => {
  for (const s of [u, `${u}b`, `${u}ib`]) SIZE_UNITS[s] = 1024 ** (i + 1);
});

// Milliseconds of a duration; a TypeError naming `what` for anything else.
export function durationMs(value, what) {
  if (typeof value === "number") {
    if (!Number.isFinite(value) || value < 0) throw new TypeError(`${what} must be a finite number of milliseconds, not ${value}`);
    return Math.round(value);
  }
  if (typeof value !== "string") throw new TypeError(`${what} must be a number of milliseconds or a string such as "30s", not ${typeof value}`);
  const m = NUMBER.exec(value);
  const unit = m ? m[2].toLowerCase() : undefined;
  // A string needs its unit: "30" could be seconds (the CLI) or milliseconds (this SDK).
  if (!m || !(unit in DURATION_UNITS)) {
    throw new TypeError(`${what} ${JSON.stringify(value)} is not a duration: use a number of milliseconds or a string with a unit (ms, s, m, h), e.g. "30s"`);
  }
  return Math.round(Number(m[1]) * DURATION_UNITS[unit]);
}

// A size as the API takes it (a byte count, or the string as written once checked).
export function size(value, what) {
  if (typeof value === "number") {
    if (!Number.isInteger(value) || value < 0) throw new TypeError(`${what} must be a whole number of bytes, not ${value}`);
    return value;
  }
  if (typeof value !== "string") throw new TypeError(`${what} must be a number of bytes or a string such as "1g", not ${typeof value}`);
  const m = NUMBER.exec(value);
  const unit = m ? m[2].toLowerCase() : undefined;
  if (!m || !(unit in SIZE_UNITS) || (SIZE_UNITS[unit] === 1 && m[1].includes("."))) {
    throw new TypeError(`${what} ${JSON.stringify(value)} is not a size: use a number of bytes or a string with a unit (k, m, g, t), e.g. "512m"`);
  }
  return value.trim();
}

const warned = new Set();
// The value of option `name`, or else of its deprecated spelling `old` (both in milliseconds).
export function option(options, name, old) {
  const value = options[name];
  if (options[old] === undefined) return value === undefined ? undefined : durationMs(value, name);
  if (value !== undefined) throw new TypeError(`give ${name} or ${old} (deprecated), not both`);
  if (!warned.has(old)) {
    warned.add(old);
    process.emitWarning(`${old} is deprecated: use ${name} (milliseconds, or a string such as "30s")`, "DeprecationWarning");
  }
  return durationMs(options[old], old);
}

export const inspect = Symbol.for("nodejs.util.inspect.custom");
