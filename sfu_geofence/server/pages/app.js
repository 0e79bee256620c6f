// The demo meeting: one WebSocket and one RTCPeerConnection per participant, as docs/protocol.md says.
// The server makes every offer; this page answers once ICE gathering is complete (no trickle).
// Plain JavaScript, no build step, nothing loaded from outside this server.
"use strict";

const GATHERING_TIMEOUT_MS = 5000;

// The demo server accepts media from this machine's own addresses (and loopback) only. A browser that
// offers no candidate at all (a machine with no network but loopback) cannot reach it; say how to fix it.
const NO_CANDIDATE_HINT =
  "Your browser offered no network address for this call, so its media cannot reach the demo server, " +
  "which accepts media from this machine's own addresses only. Connect this machine to a network (any " +
  "interface will do), or start Chrome or Chromium with --allow-loopback-in-peer-connection (Firefox: " +
  "set media.peerconnection.ice.loopback to true in about:config), then reload.";
const ANY_CANDIDATE = /^a=candidate:/m;
// An answer without candidates can still connect: a browser that hides its addresses (mDNS) may finish
// gathering before its names are ready, and the server learns its address from its checks. So the hint
// waits this long for a connection first.
const HINT_AFTER_MS = 5000;

const $ = (id) => document.getElementById(id);

// Full-screen endings: the close code decides the title; the server's own words are the reason.
const ENDINGS = {
  1000: { state: "left", icon: "left", title: "You left the meeting" },
  1001: { state: "disconnected", icon: "warning", title: "The server is shutting down" },
  4400: { state: "disconnected", icon: "warning", title: "The connection was closed after a protocol error" },
  4403: { state: "refused", icon: "blocked", title: "You can't join this meeting" },
  4408: { state: "disconnected", icon: "warning", title: "The connection timed out" },
  4409: { state: "ejected", icon: "blocked", title: "You were removed from this meeting" },
  4410: { state: "disconnected", icon: "warning", title: "The media connection failed" },
  4413: { state: "disconnected", icon: "warning", title: "A message was too large" },
  4415: { state: "disconnected", icon: "warning", title: "Your browser's answer could not be used" },
  4302: { state: "disconnected", icon: "warning", title: "The meeting's server kept sending you elsewhere" },
  4429: { state: "refused", icon: "blocked", title: "This meeting is full" },
  4500: { state: "disconnected", icon: "warning", title: "The server failed" },
};
const MAX_REDIRECTS = 1; // a cluster redirects a join once at most: one more is an error, not a loop
const LOST = { state: "disconnected", icon: "warning", title: "The connection to the server was lost" };

// Inline icons: the page loads nothing from outside, and emoji fonts are not everywhere.
const ICONS = {
  blocked: '<circle cx="32" cy="32" r="26" fill="none" stroke="currentColor" stroke-width="6"/>'
    + '<line x1="14" y1="50" x2="50" y2="14" stroke="currentColor" stroke-width="6"/>',
  warning: '<path d="M32 6 60 56H4Z" fill="none" stroke="currentColor" stroke-width="5" stroke-linejoin="round"/>'
    + '<line x1="32" y1="24" x2="32" y2="40" stroke="currentColor" stroke-width="5" stroke-linecap="round"/>'
    + '<circle cx="32" cy="48" r="3" fill="currentColor"/>',
  left: '<path d="M26 12H12v40h14M24 32h30M42 20l12 12-12 12" fill="none" stroke="currentColor"'
    + ' stroke-width="5" stroke-linecap="round" stroke-linejoin="round"/>',
};

/** What the tests (and the curious) can read: window.demo. */
const demo = {
  state: "idle",
  participant: null, // own id, once joined
  room: null,
  closeCode: null,
  reason: null, // the server's words on refusal, ejection or closing
  errors: [], // non-fatal "error" messages from the server
  offers: 0,
  redirects: [], // signaling URLs a "redirect" sent this page to (a cluster: the room's node)
};
window.demo = demo;

let session = null; // the current Session, or null

function setState(state) {
  demo.state = state;
  document.body.dataset.state = state;
}

function status(text) {
  $("status").textContent = text;
}

class Session {
  constructor({ name, room, from, watch }) {
    this.name = name;
    this.room = room;
    this.from = from;
    this.watch = watch; // receive only: no camera, no microphone (the browser then hides its addresses)
    this.ended = false;
    this.leaving = false;
    this.serverReason = null;
    this.noCandidate = false;
    this.everConnected = false;
    this.hintTimer = null;
    this.hintDue = false;
    this.peers = new Map(); // participant id -> { name, tile, tracks: Map(kind -> track) }
    this.gone = new Set(); // ids that left: an offer made before they left must not bring them back
    this.queue = Promise.resolve(); // offers are answered one at a time, in order
    this.local = null;
    this.pc = null;
    this.ws = null;
  }

  async start() {
    setState("joining");
    status(this.watch ? "Joining without camera…" : "Starting camera and microphone…");
    this.local = this.watch ? new MediaStream() : await localMedia();
    if (this.ended) return this.stopLocal();
    const publish = { audio: this.local.getAudioTracks().length > 0, video: this.local.getVideoTracks().length > 0 };
    $("local-video").srcObject = this.local;
    $("local-tile").classList.toggle("no-video", !publish.video);
    $("local-avatar").textContent = initials(this.name);
    $("local-name").textContent = this.name || "(no name)";
    this.pc = new RTCPeerConnection({ iceServers: [] });
    this.pc.addEventListener("connectionstatechange", () => this.showConnection());
    status("Connecting…");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.query = this.from ? `?from=${encodeURIComponent(this.from)}` : "";
    this.publish = publish;
    this.connect(`${scheme}://${location.host}/ws`);
  }

  /** Signal at ``url``: the page's own server, or the node a "redirect" named (nothing was
   * negotiated before a redirect, so the same peer connection and camera go on there). */
  connect(url) {
    const ws = new WebSocket(url + this.query);
    this.ws = ws;
    ws.addEventListener("open", () =>
      this.send({ type: "join", room: this.room, name: this.name, publish: this.publish }),
    );
    ws.addEventListener("message", (event) => this.receive(event.data));
    ws.addEventListener("close", (event) => {
      if (ws === this.ws) this.closed(event.code, event.reason);
    });
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  receive(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch (error) {
      console.error("not JSON from the server", text);
      return;
    }
    switch (message.type) {
      case "joined":
        // The server's TURN/STUN servers (serve/demo --turn), before the first offer is answered.
        if (message.ice_servers?.length) {
          this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers: message.ice_servers });
        }
        demo.participant = message.participant;
        demo.room = message.room;
        setState("in-meeting");
        showMeeting(this.room);
        for (const peer of message.participants) this.addPeer(peer.participant, peer.name);
        this.showConnection();
        break;
      case "participant-joined":
        this.addPeer(message.participant, message.name);
        break;
      case "participant-left":
        this.removePeer(message.participant);
        break;
      case "offer":
        this.queue = this.queue.then(() => this.answer(message)).catch((error) => this.fail(error));
        break;
      case "refused":
      case "ejected":
        this.serverReason = message.reason;
        break;
      case "closing":
        this.serverReason = message.message || message.reason;
        break;
      case "redirect":
        // Another node of the cluster hosts the room: follow once (close 4302 follows), never loop.
        this.redirectTo = message.url;
        break;
      case "error":
        demo.errors.push(message);
        console.warn("server error", message.code, message.message);
        status(`Server: ${message.message}`);
        break;
      default:
        console.warn("unknown message", message.type);
    }
  }

  async answer(offer) {
    if (this.ended) return;
    const pc = this.pc;
    await pc.setRemoteDescription({ type: "offer", sdp: offer.sdp });
    // Our media goes on exactly the m-lines the server names in "publish".
    for (const { mid, kind } of offer.publish) {
      const transceiver = pc.getTransceivers().find((t) => t.mid === mid);
      const track = this.local.getTracks().find((t) => t.kind === kind);
      if (!transceiver || !track) continue;
      if (transceiver.sender.track !== track) await transceiver.sender.replaceTrack(track);
      transceiver.direction = "sendonly";
      transceiver.sender.setStreams?.(this.local);
    }
    this.mapRemoteTracks(offer.tracks);
    await pc.setLocalDescription(await pc.createAnswer());
    try {
      await gatheringComplete(pc, GATHERING_TIMEOUT_MS);
    } finally {
      this.checkCandidates(pc.localDescription.sdp);
    }
    if (this.ended) return;
    this.send({ type: "answer", sdp: pc.localDescription.sdp });
    demo.offers += 1;
  }

  /** No candidate at all in our answer, and no connection after a while: say how to fix it. */
  checkCandidates(sdp) {
    this.noCandidate = !ANY_CANDIDATE.test(sdp);
    clearTimeout(this.hintTimer);
    this.hintDue = false;
    if (this.noCandidate && !this.everConnected) {
      this.hintTimer = setTimeout(() => {
        this.hintDue = true;
        this.showHint();
      }, HINT_AFTER_MS);
    }
    this.showHint();
  }

  /** The hint is for a browser that offered nothing and has not connected. */
  showHint() {
    const show = this.noCandidate && !this.everConnected && this.hintDue;
    $("notice").hidden = !show;
    $("notice").textContent = show ? NO_CANDIDATE_HINT : "";
  }

  /** Each offer's "tracks" is the whole current mapping of m-lines to participants. */
  mapRemoteTracks(tracks) {
    const byMid = new Map(this.pc.getTransceivers().map((t) => [t.mid, t]));
    const wanted = new Map(); // participant -> Map(kind -> track)
    for (const info of tracks) {
      const transceiver = byMid.get(info.mid);
      if (!transceiver) continue;
      this.addPeer(info.participant, info.name);
      if (!this.peers.has(info.participant)) continue;
      if (!wanted.has(info.participant)) wanted.set(info.participant, new Map());
      wanted.get(info.participant).set(info.kind, transceiver.receiver.track);
    }
    for (const [id, peer] of this.peers) this.setPeerTracks(peer, wanted.get(id) || new Map());
  }

  addPeer(id, name) {
    if (this.peers.has(id) || this.gone.has(id) || id === demo.participant) return;
    const tile = $("remote-tile").content.firstElementChild.cloneNode(true);
    tile.dataset.participant = id;
    tile.dataset.name = name || "";
    tile.querySelector(".who").textContent = name || "(no name)";
    tile.querySelector(".avatar").textContent = initials(name);
    tile.classList.add("no-video");
    $("tiles").append(tile);
    this.peers.set(id, { name, tile, tracks: new Map() });
    updateAlone(this.peers.size);
  }

  setPeerTracks(peer, tracks) {
    const same =
      tracks.size === peer.tracks.size && [...tracks].every(([kind, track]) => peer.tracks.get(kind) === track);
    if (same) return;
    peer.tracks = tracks;
    const video = peer.tile.querySelector("video");
    // A new stream each time: an element never keeps showing a track that is no longer its peer's.
    video.srcObject = tracks.size ? new MediaStream([...tracks.values()]) : null;
    peer.tile.classList.toggle("no-video", !tracks.has("video"));
    if (tracks.size) play(video, peer.tile);
  }

  removePeer(id) {
    this.gone.add(id);
    const peer = this.peers.get(id);
    if (!peer) return;
    this.peers.delete(id);
    const video = peer.tile.querySelector("video");
    video.srcObject = null;
    peer.tile.remove(); // never a frozen last frame
    updateAlone(this.peers.size);
  }

  showConnection() {
    const state = this.pc.connectionState;
    if (state === "connected") this.everConnected = true;
    if (demo.state !== "in-meeting") return;
    status(state === "connected" ? "Connected" : `Media: ${state}`);
    this.showHint();
  }

  leave() {
    this.leaving = true;
    this.send({ type: "leave" });
    // The server answers with close 1000; if the socket is already gone, end here.
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) this.closed(1000, "");
  }

  fail(error) {
    console.error(error);
    this.serverReason = `This page could not answer the server: ${error.message || error}`;
    this.end();
    this.ws?.close(4000, "client failure");
  }

  closed(code, reason) {
    const url = this.redirectTo;
    this.redirectTo = null;
    if (code === 4302 && url && /^wss?:\/\//.test(url) && demo.redirects.length < MAX_REDIRECTS && !this.ended) {
      demo.redirects.push(url);
      status("Connecting to the meeting's server…");
      this.connect(url);
      return;
    }
    if (code === 4302) this.serverReason = "The meeting's server sent this page on more than once: try again later.";
    if (this.ended && demo.closeCode !== null) return;
    demo.closeCode = code;
    const left = this.leaving && code === 1000;
    const ending = (left ? ENDINGS[1000] : ENDINGS[code]) || LOST;
    const words = left ? "" : this.serverReason || reason || "";
    this.end();
    const hint = this.noCandidate && !this.everConnected ? NO_CANDIDATE_HINT : "";
    showEnding(ending, words, code, hint);
  }

  /** Tear everything down: no tile, no track, no connection outlives the session. */
  end() {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.hintTimer);
    for (const id of [...this.peers.keys()]) this.removePeer(id);
    this.pc?.close();
    this.stopLocal();
  }

  stopLocal() {
    for (const track of this.local?.getTracks() || []) track.stop();
    $("local-video").srcObject = null;
  }
}

/** Camera and microphone; either alone if the other is missing. Errors say what to do. */
async function localMedia() {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error("this browser gives no camera access here: open the page as http://127.0.0.1:PORT/");
  }
  let failure;
  for (const constraints of [{ audio: true, video: true }, { audio: true }, { video: true }]) {
    try {
      return await navigator.mediaDevices.getUserMedia(constraints);
    } catch (error) {
      failure = failure || error;
      if (error.name === "NotAllowedError" || error.name === "SecurityError") break;
    }
  }
  if (failure.name === "NotAllowedError") {
    throw new Error("camera and microphone access was refused: allow them for this page and join again");
  }
  if (failure.name === "NotFoundError") throw new Error("no camera or microphone was found");
  throw failure;
}

function gatheringComplete(pc, ms) {
  return new Promise((resolve, reject) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const timer = setTimeout(() => reject(new Error(`ICE gathering not complete after ${ms} ms`)), ms);
    const check = () => {
      if (pc.iceGatheringState !== "complete") return;
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    pc.addEventListener("icegatheringstatechange", check);
  });
}

function play(video, tile) {
  video.muted = false;
  video.play().catch(() => {
    // Autoplay with sound was refused: play muted and let the user unmute with a click.
    video.muted = true;
    tile.classList.add("muted");
    tile.title = "Click to hear this participant";
    tile.addEventListener("click", () => {
      video.muted = false;
      tile.classList.remove("muted");
      tile.title = "";
    }, { once: true });
    video.play().catch((error) => console.warn("video does not play", error));
  });
}

function initials(name) {
  const words = (name || "?").trim().split(/\s+/).filter(Boolean);
  return words.slice(0, 2).map((w) => [...w][0].toUpperCase()).join("") || "?";
}

function updateAlone(others) {
  $("alone").hidden = others > 0;
}

/** One view at a time: the lobby form, the meeting, or a full-screen ending card. */
function showView(view) {
  for (const id of ["lobby", "meeting", "screen"]) $(id).hidden = id !== view;
  for (const id of ["leave", "meeting-title", "origin", "notice"]) $(id).hidden = true;
  if (view !== "meeting") status("");
}

function showMeeting(room) {
  showView("meeting");
  const from = $("from").selectedOptions[0];
  $("leave").hidden = false;
  $("meeting-title").hidden = false;
  $("meeting-title").textContent = `Room ${room}`;
  $("origin").hidden = !$("from").value;
  $("origin").textContent = $("from").value ? `connected as if from ${from.textContent}` : "";
}

function showEnding(ending, reason, code, hint) {
  setState(ending.state);
  demo.reason = reason;
  showView("screen");
  $("screen").dataset.kind = ending.state;
  $("screen-icon").innerHTML = `<svg viewBox="0 0 64 64" width="56" height="56">${ICONS[ending.icon]}</svg>`;
  $("screen-title").textContent = ending.title;
  $("screen-reason").textContent = reason;
  $("screen-reason").hidden = !reason;
  $("screen-detail").textContent = code === 1000 ? "" : `close code ${code}`;
  $("screen-hint").textContent = hint || "";
  $("screen-hint").hidden = !hint;
}

function showLobby(message) {
  setState("idle");
  showView("lobby");
  $("lobby-error").hidden = !message;
  $("lobby-error").textContent = message || "";
}

let watching = false; // how the last join was made: "Rejoin" repeats it

async function join(watch = watching) {
  const form = $("join-form");
  if (!form.reportValidity()) return;
  watching = watch;
  demo.participant = null;
  demo.room = null;
  demo.closeCode = null;
  demo.reason = null;
  demo.redirects = [];
  session = new Session({
    name: $("name").value.trim(),
    room: $("room").value.trim(),
    from: $("from").value,
    watch,
  });
  $("join").disabled = true;
  $("watch").disabled = true;
  try {
    await session.start();
  } catch (error) {
    console.error(error);
    session.end();
    session = null;
    showLobby(`Could not start: ${error.message || error}`);
  } finally {
    $("join").disabled = false;
    $("watch").disabled = false;
  }
}

async function loadOrigins() {
  const params = new URLSearchParams(location.search);
  for (const field of ["name", "room"]) if (params.get(field)) $(field).value = params.get(field);
  try {
    const response = await fetch("/origins");
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    const { origins, database } = await response.json();
    for (const origin of origins) {
      const option = new Option(`${origin.name} (${origin.country}, ${origin.address})`, origin.country);
      $("from").append(option);
    }
    $("database").textContent = database;
  } catch (error) {
    console.warn("no sample origins", error);
  }
  const from = (params.get("from") || "").toUpperCase();
  if ([...$("from").options].some((o) => o.value === from)) $("from").value = from;
}

$("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  join(false);
});
$("watch").addEventListener("click", () => join(true));
$("leave").addEventListener("click", () => session?.leave());
$("rejoin").addEventListener("click", () => join());
$("back").addEventListener("click", () => showLobby());
window.addEventListener("pagehide", () => session?.leave());
loadOrigins();
