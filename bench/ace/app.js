// The peer of bench/ingest.py: the smallest atlassian-connect-express (ACE) app that
// takes signed `installed` calls, on PostgreSQL (ACE's sequelize store with `pg`).
//
// ACE does all the work itself: its `installed` route checks the host against the
// whitelist, fetches the install key for the token's kid from the key server named by
// CONNECT_KEYS_CDN_URL (the bench's simulated one; ACE fetches it on every call, as it
// does in production), verifies RS256, aud, qsh and exp, and stores the tenant in one
// transaction (findOrCreate of its AddonSetting row). Nothing here is custom beyond the
// wiring, so the figure is ACE's own.
//
// Run from a folder holding this file, config.json, atlassian-connect.json and
// node_modules (bench/ingest.py copies them into a temporary folder and runs
// `npm install`). Environment: NODE_ENV=production, PORT, AC_LOCAL_BASE_URL, DB_URL,
// CONNECT_KEYS_CDN_URL, ACE_WORKERS (processes, like `ledger serve --workers`).
//
// The workers are started one after another: each creates ACE's tables on start-up
// (CREATE TABLE IF NOT EXISTS), which two processes running at once can trip over.
"use strict";

const cluster = require("node:cluster");

const workers = Number(process.env.ACE_WORKERS || "1");

if (cluster.isPrimary && workers > 1) {
  const startNext = remaining => {
    if (remaining === 0) {
      console.log("ACE-PEER ready");
      return;
    }
    const worker = cluster.fork();
    worker.on("message", message => {
      if (message === "ready") startNext(remaining - 1);
    });
  };
  cluster.on("exit", (worker, code) => {
    console.error(`ACE-PEER worker ${worker.process.pid} exited with ${code}`);
    process.exit(1);
  });
  process.on("SIGTERM", () => {
    for (const worker of Object.values(cluster.workers)) worker.process.kill("SIGTERM");
    process.exit(0);
  });
  startNext(workers);
} else {
  const express = require("express");
  const ace = require("atlassian-connect-express");

  const app = express();
  app.set("env", "production");
  app.use(express.json());
  const addon = ace(app);
  app.use(addon.middleware());
  app.get("/healthz", (_req, res) => res.status(200).send("ok"));
  // The peer of bench/auth_verify.py: ACE's own addon.authenticate() on a page request
  // (HS256 with the tenant's secret from its store, qsh, exp), answering who it is for.
  app.post("/page", addon.authenticate(), (req, res) =>
    res.status(200).json({ clientKey: res.locals.clientKey, accountId: res.locals.userAccountId })
  );

  const tables = [
    addon.settings.connectionPromise,
    addon.settings.installationMappingPromise,
    addon.settings.forgeSettingsPromise
  ];
  Promise.all(tables).then(
    () => {
      app.listen(Number(process.env.PORT), "127.0.0.1", () => {
        if (process.send) process.send("ready");
        else console.log("ACE-PEER ready");
      });
    },
    err => {
      console.error("ACE-PEER could not create its tables:", err);
      process.exit(1);
    }
  );
}
