// Passkeys on the hosted pages: adding and removing passkeys on the account
// page, and signing in with one on the sign-in page (offered in the email
// field's autofill where the browser supports conditional mediation, and by
// a button). It talks to castellan's JSON API on the same origin, builds
// the page only with textContent and createElement (never innerHTML or
// eval), and stores nothing. Without JavaScript these sections stay hidden.
"use strict";
(function () {
  if (!window.PublicKeyCredential || !navigator.credentials) { return; }

  function toBuffer(text) {
    var s = text.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) { s += "="; }
    var bin = atob(s), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { bytes[i] = bin.charCodeAt(i); }
    return bytes.buffer;
  }

  function toText(buffer) {
    var bytes = new Uint8Array(buffer), s = "";
    for (var i = 0; i < bytes.length; i++) { s += String.fromCharCode(bytes[i]); }
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  // Drops null members: the API omits nothing, the browser rejects nulls.
  function clean(value) {
    if (Array.isArray(value)) { return value.map(clean); }
    if (value && typeof value === "object") {
      var out = {};
      Object.keys(value).forEach(function (k) {
        if (value[k] !== null) { out[k] = clean(value[k]); }
      });
      return out;
    }
    return value;
  }

  function decodeIds(list) {
    (list || []).forEach(function (c) { c.id = toBuffer(c.id); });
  }

  function creationOptions(options) {
    var pk = clean(options.publicKey);
    pk.challenge = toBuffer(pk.challenge);
    pk.user.id = toBuffer(pk.user.id);
    decodeIds(pk.excludeCredentials);
    return pk;
  }

  function requestOptions(options) {
    var pk = clean(options.publicKey);
    pk.challenge = toBuffer(pk.challenge);
    decodeIds(pk.allowCredentials);
    return pk;
  }

  function credentialJson(cred) {
    var r = cred.response, out = {
      id: cred.id, rawId: toText(cred.rawId), type: cred.type,
      response: { clientDataJSON: toText(r.clientDataJSON) }
    };
    if (r.attestationObject) { out.response.attestationObject = toText(r.attestationObject); }
    if (r.authenticatorData) { out.response.authenticatorData = toText(r.authenticatorData); }
    if (r.signature) { out.response.signature = toText(r.signature); }
    if (r.userHandle) { out.response.userHandle = toText(r.userHandle); }
    return out;
  }

  function call(method, path, body, csrf) {
    var headers = { "Accept": "application/json" };
    if (body !== undefined) { headers["Content-Type"] = "application/json"; }
    if (csrf) { headers["X-CSRF-Token"] = csrf; }
    return fetch(path, {
      method: method, credentials: "same-origin", headers: headers,
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (res) {
      if (res.status === 204) { return null; }
      return res.json().then(function (data) {
        if (!res.ok) {
          var e = new Error((data && data.error && data.error.message) || "request failed");
          e.code = data && data.error && data.error.code;
          throw e;
        }
        return data;
      });
    });
  }

  function say(node, text) { if (node) { node.textContent = text; } }

  function accountPage(section) {
    var csrf = section.getAttribute("data-csrf");
    var list = document.getElementById("passkey-list");
    var status = document.getElementById("passkey-status");
    var nameInput = document.getElementById("passkey-name");

    function render(passkeys) {
      while (list.firstChild) { list.removeChild(list.firstChild); }
      if (passkeys.length === 0) {
        var none = document.createElement("li");
        none.textContent = "No passkeys yet.";
        list.appendChild(none);
      }
      passkeys.forEach(function (p) {
        var item = document.createElement("li");
        var label = document.createElement("span");
        label.className = "passkey-name";
        label.textContent = p.name + (p.flagged ? " (blocked: remove it and add it again)" : "");
        var remove = document.createElement("button");
        remove.type = "button";
        remove.className = "danger";
        remove.textContent = "Remove";
        remove.setAttribute("aria-label", "Remove passkey " + p.name);
        remove.addEventListener("click", function () {
          call("DELETE", "/v1/passkeys/" + encodeURIComponent(p.id), undefined, csrf)
            .then(function () { say(status, "Passkey removed."); return refresh(); })
            .catch(function (e) {
              say(status, e.code === "reauthentication_required" || e.code === "mfa_required"
                ? "Sign in again to remove a passkey." : "The passkey was not removed: " + e.message);
            });
        });
        item.appendChild(label);
        item.appendChild(document.createTextNode(" "));
        item.appendChild(remove);
        list.appendChild(item);
      });
    }

    function refresh() {
      return call("GET", "/v1/passkeys").then(function (data) { render(data.passkeys); });
    }

    document.getElementById("passkey-add").addEventListener("click", function () {
      var name = (nameInput.value || "").trim() || "Passkey";
      say(status, "Follow your browser's instructions to create the passkey.");
      call("POST", "/v1/passkeys/registration/start", {}, csrf)
        .then(function (started) {
          return navigator.credentials.create({ publicKey: creationOptions(started.options) })
            .then(function (cred) {
              return call("POST", "/v1/passkeys/registration/finish", {
                ceremony_id: started.ceremony_id, name: name, credential: credentialJson(cred)
              }, csrf);
            });
        })
        .then(function () { say(status, "Passkey added."); return refresh(); })
        .catch(function (e) {
          say(status, e.code === "reauthentication_required" || e.code === "mfa_required"
            ? "Sign in again to add a passkey." : "No passkey was added: " + e.message);
        });
    });

    section.hidden = false;
    refresh().catch(function () { say(status, "Passkeys could not be loaded."); });
  }

  function signInPage(box) {
    var status = document.getElementById("passkey-sign-in-status");
    var pending = null;

    function finish(started, cred) {
      return call("POST", "/v1/login/passkey/finish", {
        ceremony_id: started.ceremony_id, credential: credentialJson(cred)
      }).then(function () { window.location.assign("/ui/account"); });
    }

    function run(mediation) {
      if (pending) { pending.abort(); }
      var controller = new AbortController();
      pending = controller;
      return call("POST", "/v1/login/passkey/start", {}).then(function (started) {
        var request = { publicKey: requestOptions(started.options), signal: controller.signal };
        if (mediation) { request.mediation = mediation; }
        return navigator.credentials.get(request).then(function (cred) { return finish(started, cred); });
      });
    }

    document.getElementById("passkey-sign-in-button").addEventListener("click", function () {
      say(status, "Follow your browser's instructions to use your passkey.");
      run(null).catch(function (e) {
        if (e.name !== "AbortError") { say(status, "Passkey sign-in failed: " + e.message); }
      });
    });
    box.hidden = false;

    if (PublicKeyCredential.isConditionalMediationAvailable) {
      PublicKeyCredential.isConditionalMediationAvailable().then(function (yes) {
        var email = document.getElementById("email");
        if (!yes || !email) { return; }
        email.setAttribute("autocomplete", "username webauthn");
        run("conditional").catch(function () {});
      });
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var section = document.getElementById("passkeys");
    if (section) { accountPage(section); }
    var box = document.getElementById("passkey-sign-in");
    if (box) { signInPage(box); }
  });
})();
