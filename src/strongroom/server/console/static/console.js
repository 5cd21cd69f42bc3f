// strongroom console: WebAuthn ceremonies and in-page audit proof checks.
// Our own small script (no framework, no build step); loaded from /static under
// a CSP that forbids inline script. Values from the server are only ever put
// into the page with textContent, never as HTML.
"use strict";

(function () {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  function show(text, ok) {
    const el = document.getElementById("result");
    if (!el) return;
    el.textContent = text;
    el.className = "result " + (ok ? "ok" : "error");
  }

  async function post(url, body) {
    const r = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf(),
                "Accept": "application/json"},
      body: JSON.stringify(body),
    });
    let data = {};
    try { data = await r.json(); } catch (e) { data = {error: "HTTP " + r.status}; }
    if (!r.ok) throw new Error(data.error || ("HTTP " + r.status));
    return data;
  }

  // The code of a digest as people compare it: first 16 hex digits, upper case, groups of 4
  // (strongroom.units.short_code; `strongroom access show` prints the request's the same way).
  function shortCode(hex) {
    return hex.slice(0, 16).toUpperCase().match(/.{4}/g).join("-");
  }
  function hexOf(b64url) {
    const bin = atob(b64url.replace(/-/g, "+").replace(/_/g, "/"));
    return Array.from(bin, (c) => c.charCodeAt(0).toString(16).padStart(2, "0")).join("");
  }

  // Show what the key is about to sign (the statement and its digest) before asking for it.
  function preview(begin) {
    const box = document.getElementById("signing");
    if (!box || !begin.statement) return;
    document.getElementById("signing-code").textContent = shortCode(hexOf(begin.options.challenge));
    const names = begin.statement.request || begin.statement.grant ||
      begin.statement.break_glass || "";
    document.getElementById("signing-request").textContent =
      /^[0-9a-f]{64}$/.test(names) ? shortCode(names) : "(none)";
    document.getElementById("signing-statement").textContent =
      JSON.stringify(begin.statement, null, 2);
    box.hidden = false;
  }

  async function getAssertion(options) {
    const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options);
    const cred = await navigator.credentials.get({publicKey});
    return cred.toJSON();
  }

  const ceremonies = {
    async register(el) {
      const token = document.getElementById("token").value;
      const begin = await post("/webauthn/register/begin", {token});
      const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(begin.options);
      const cred = await navigator.credentials.create({publicKey});
      const done = await post("/webauthn/register/finish", {credential: cred.toJSON()});
      show("Registered security key " + done.credential_id + " (pending). Next: " + done.next, true);
      el.dataset.credential = done.credential_id;
    },
    async login() {
      const name = (document.getElementById("name") || {value: ""}).value;
      const begin = await post("/webauthn/login/begin", {name});
      let credential;
      try {
        credential = await getAssertion(begin.options);
      } catch (e) {
        // The server never says whether a name has keys; the authenticator finds none.
        if (e && e.name === "NotAllowedError") {
          throw new Error("No security key enrolled for this name answered (or you cancelled). "
                          + "A new key must first be endorsed by the security officers.");
        }
        throw e;
      }
      const done = await post("/webauthn/login/finish", {credential});
      window.location.assign(done.redirect);
    },
    async approve(el) {
      const begin = await post("/webauthn/approve/begin", {request: el.dataset.request});
      preview(begin);
      const credential = await getAssertion(begin.options);
      const done = await post("/webauthn/approve/finish", {credential});
      window.location.assign(done.redirect);
    },
    async deny(el) {
      const reason = (document.getElementById("deny-reason") || {value: ""}).value;
      const begin = await post("/webauthn/deny/begin", {request: el.dataset.request, reason});
      preview(begin);
      const credential = await getAssertion(begin.options);
      const done = await post("/webauthn/deny/finish", {credential});
      window.location.assign(done.redirect);
    },
    async revoke(el) {
      const reason = (document.getElementById("revoke-reason") || {value: ""}).value;
      const begin = await post("/webauthn/revoke/begin", {request: el.dataset.request, reason});
      preview(begin);
      const credential = await getAssertion(begin.options);
      const done = await post("/webauthn/revoke/finish", {credential});
      window.location.assign(done.redirect);
    },
    async seal(el) {
      const reason = (document.getElementById("seal-reason") || {value: ""}).value;
      const picked = el.querySelector("input[name=scope]:checked");
      const scope = picked ? picked.value : "host";
      const begin = await post("/webauthn/seal/begin", {reason, scope});
      const credential = await getAssertion(begin.options);
      const done = await post("/webauthn/seal/finish", {credential});
      window.location.assign(done.redirect);
    },
    async "alert-ack"(el) {
      const reason = (el.querySelector("input[name=reason]") || {value: ""}).value;
      const begin = await post("/webauthn/alert-ack/begin", {alert: el.dataset.alert, reason});
      const credential = await getAssertion(begin.options);
      const done = await post("/webauthn/alert-ack/finish", {credential});
      window.location.assign(done.redirect);
    },
    async "break-glass-review"(el) {
      const picked = el.querySelector("input[name=verdict]:checked");
      const note = (el.querySelector("textarea[name=note]") || {value: ""}).value;
      const begin = await post("/webauthn/break-glass-review/begin", {
        break_glass: el.dataset.breakGlass, verdict: picked ? picked.value : "", reason: note});
      preview(begin);
      const credential = await getAssertion(begin.options);
      const done = await post("/webauthn/break-glass-review/finish", {credential});
      window.location.assign(done.redirect);
    },
    async grant(el) {
      const begin = await post("/webauthn/grant/begin", {request: el.dataset.request});
      const credential = await getAssertion(begin.options);
      const done = await post("/webauthn/grant/finish", {credential});
      window.location.assign(done.redirect);
    },
  };

  function bind(el) {
    const kind = el.dataset.webauthn;
    const run = async (ev) => {
      ev.preventDefault();
      show("Touch your security key…", true);
      try { await ceremonies[kind](el); } catch (e) { show(String(e.message || e), false); }
    };
    el.addEventListener(el.tagName === "FORM" ? "submit" : "click", run);
  }

  // -- RFC 9162 inclusion proofs, checked here with WebCrypto ---------------------------

  const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  async function sha256(...parts) {
    const len = parts.reduce((n, p) => n + p.length, 0);
    const buf = new Uint8Array(len);
    let off = 0;
    for (const p of parts) { buf.set(p, off); off += p.length; }
    return new Uint8Array(await crypto.subtle.digest("SHA-256", buf));
  }
  const leafHash = (d) => sha256(new Uint8Array([0]), d);
  const nodeHash = (l, r) => sha256(new Uint8Array([1]), l, r);

  // RFC 9162 section 2.1.3.2: verify an inclusion proof.
  async function rootFromProof(index, size, leaf, proof) {
    if (index >= size) throw new Error("index beyond tree size");
    let fn = BigInt(index), sn = BigInt(size) - 1n, r = leaf;
    for (const p of proof) {
      if (sn === 0n) throw new Error("proof too long");
      if ((fn & 1n) === 1n || fn === sn) {
        r = await nodeHash(p, r);
        if ((fn & 1n) === 0n) {
          while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
        }
      } else {
        r = await nodeHash(r, p);
      }
      fn >>= 1n; sn >>= 1n;
    }
    if (sn !== 0n) throw new Error("proof too short");
    return r;
  }

  function equal(a, b) {
    if (a.length !== b.length) return false;
    let d = 0;
    for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
    return d === 0;
  }

  async function verifyProof(btn) {
    const index = btn.dataset.proof;
    const out = document.getElementById("proof-" + index);
    out.textContent = "checking…";
    try {
      const r = await fetch("/console/audit/" + encodeURIComponent(index) + "/proof",
                            {credentials: "same-origin", headers: {"Accept": "application/json"}});
      const p = await r.json();
      if (!r.ok) throw new Error(p.error || ("HTTP " + r.status));
      // The root is read from the signed checkpoint text itself (line 3 of the note).
      const lines = p.checkpoint.split("\n");
      const noteRoot = b64(lines[2]);
      if (Number(lines[1]) !== p.size || !equal(noteRoot, b64(p.root)))
        throw new Error("checkpoint and proof disagree");
      const entry = b64(p.entry);
      const text = new TextDecoder().decode(entry);
      if (JSON.parse(text).index !== Number(index)) throw new Error("entry is another index");
      const root = await rootFromProof(p.index, p.size, await leafHash(entry),
                                       p.hashes.map(b64));
      if (!equal(root, noteRoot)) throw new Error("Merkle path does not lead to the root");
      out.textContent = "included in checkpoint of size " + p.size + " ✓";
      out.className = "proof ok";
    } catch (e) {
      out.textContent = "NOT verified: " + (e.message || e);
      out.className = "proof error";
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-webauthn]").forEach(bind);
    document.querySelectorAll("[data-proof]").forEach((b) =>
      b.addEventListener("click", () => verifyProof(b)));
  });
})();
