// A gateway-like writer of sessions.json, following FORMATS.md section 3 to the letter.
// Usage: node gateway_writer.js <sessions folder> <seconds> <log file> [pause ms between writes]
// Each write: take sessions.json.lock (O_CREAT|O_EXCL, {"pid","createdAt"}), re-read the index,
// add one fresh session and touch agent:main:main, write a temporary file, fsync, rename, unlock.
// After each committed write it appends "<seq>" to the log; torn reads and lock failures are
// logged as "torn" and "lockfail".
"use strict";
const fs = require("fs");
const path = require("path");

const folder = fs.realpathSync(process.argv[2]);
const seconds = Number(process.argv[3]);
const logFile = process.argv[4];
const pauseMs = Number(process.argv[5] || 30);
const indexPath = path.join(folder, "sessions.json");
const lockPath = indexPath + ".lock";
const STALE_MS = 30000;

function sleep(ms) { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms); }

function pidAlive(pid) {
  try { process.kill(pid, 0); return true; } catch (e) { return e.code === "EPERM"; }
}

function lockIsStale() {
  let text, stat;
  try { stat = fs.statSync(lockPath); text = fs.readFileSync(lockPath, "utf8"); } catch (e) { return false; }
  try {
    const info = JSON.parse(text);
    if (typeof info.pid !== "number" || typeof info.createdAt !== "string") throw new Error("bad");
    return !pidAlive(info.pid) || Date.now() - Date.parse(info.createdAt) > STALE_MS;
  } catch (e) {
    return Date.now() - stat.mtimeMs > STALE_MS;
  }
}

function acquire() {
  const started = Date.now();
  for (let attempt = 1; ; attempt++) {
    try {
      const fd = fs.openSync(lockPath, "wx", 0o600);
      fs.writeSync(fd, JSON.stringify({ pid: process.pid, createdAt: new Date().toISOString() }));
      fs.closeSync(fd);
      return true;
    } catch (e) {
      if (e.code !== "EEXIST") throw e;
    }
    if (lockIsStale()) { try { fs.unlinkSync(lockPath); } catch (e) {} continue; }
    if (Date.now() - started > 10000) return false;
    sleep(Math.min(50 * attempt, 1000));
  }
}

function writeAtomic(text) {
  const temporary = `${indexPath}.${process.pid}.${Math.random().toString(16).slice(2)}.tmp`;
  const fd = fs.openSync(temporary, "w", 0o600);
  fs.writeSync(fd, text);
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  fs.renameSync(temporary, indexPath);
}

const deadline = Date.now() + seconds * 1000;
for (let seq = 1; Date.now() < deadline; seq++) {
  if (!acquire()) { fs.appendFileSync(logFile, "lockfail\n"); continue; }
  let committed = false;
  try {
    let store;
    try { store = JSON.parse(fs.readFileSync(indexPath, "utf8")); } catch (e) { store = null; }
    if (store === null) {
      fs.appendFileSync(logFile, "torn\n");
    } else {
      store[`agent:main:cron:writer-${seq}`] = { sessionId: `writer-${seq}`, updatedAt: Date.now(), seq };
      if (store["agent:main:main"]) { store["agent:main:main"].totalTokens = seq; store["agent:main:main"].updatedAt = Date.now(); }
      writeAtomic(JSON.stringify(store, null, 2));
      committed = true;
    }
  } finally {
    fs.unlinkSync(lockPath);
  }
  if (committed) fs.appendFileSync(logFile, `${seq}\n`);
  sleep(pauseMs);
}
