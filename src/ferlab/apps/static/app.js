"use strict";
// The ferlab page: a photo or webcam frames go to POST v1/predict; boxes and labels are drawn on
// the canvas, and each face gets a card with its probability bars. Clicking a face of a photo (its
// box or its card) asks POST v1/explain for its heatmap. Everything is served locally.
// Webcam frames get face detection every DETECT_EVERY frames; the frames between send the boxes
// last found, to be classified without detection. Detection comes on the next frame while no face
// is held, after the number of faces changed, or when one scored under SURE_SCORE.

const PALETTE = [
  "#e6553c", "#3ca03c", "#aa3caa", "#f0b428", "#2878c8", "#3cc8e6", "#8c8c8c", "#a0642d",
];
const byId = (id) => document.getElementById(id);
const canvas = byId("canvas");
const context = canvas.getContext("2d");
const video = byId("video");
const DETECT_EVERY = 3;
const SURE_SCORE = 0.75;
const camera = {
  stream: null, timer: null, frames: 0, started: 0, busy: 0, boxes: [], next: 0, detections: 0,
};
let classes = [];
let shown = { photo: null, faces: [], scale: 1 };

function colour(label) {
  const index = classes.indexOf(label);
  return PALETTE[(index < 0 ? 0 : index) % PALETTE.length];
}

function setStatus(text, isError = false) {
  const status = byId("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

async function send(path, body) {
  const headers = {};
  const key = byId("key").value.trim();
  if (key) headers["X-API-Key"] = key;
  const response = await fetch(path, { method: body ? "POST" : "GET", headers, body });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error || message;
    } catch (ignored) {
      // not JSON: keep the status line
    }
    throw new Error(message);
  }
  return response;
}

async function call(path, body) {
  return (await send(path, body)).json();
}

async function describeModel() {
  try {
    const [model] = (await call("v1/models")).models;
    classes = model.classes;
    byId("model").textContent = `model: ${model.name} (${model.ref}) on ${model.runtime}; ` +
      `classes: ${model.classes.join(", ")}`;
  } catch (error) {
    byId("model").textContent = `model: ${error.message}`;
  }
}

async function predict(blob, name, boxes = null) {
  const form = new FormData();
  form.append("file", blob, name);
  const started = performance.now();
  const given = boxes ? `?boxes=${encodeURIComponent(boxes.map((b) => b.join(",")).join(";"))}` : "";
  const result = await call(`v1/predict${given}`, form);
  return { result, ms: performance.now() - started };
}

function draw(source, width, height, result) {
  canvas.width = width;
  canvas.height = height;
  context.drawImage(source, 0, 0, width, height);
  const sx = width / result.width;
  const sy = height / result.height;
  const line = Math.max(2, Math.round(width / 320));
  const size = Math.max(14, Math.round(width / 36));
  context.font = `${size}px system-ui, sans-serif`;
  context.textBaseline = "top";
  result.faces.forEach((face, i) => {
    const [x1, y1, x2, y2] = face.box || [0, 0, result.width, result.height];
    const x = x1 * sx;
    const y = y1 * sy;
    context.lineWidth = line;
    context.strokeStyle = colour(face.label);
    context.strokeRect(x, y, (x2 - x1) * sx, (y2 - y1) * sy);
    const text = `${i + 1}. ${face.label} ${face.score.toFixed(2)}`;
    const textWidth = context.measureText(text).width + 8;
    const top = y >= size + 6 ? y - size - 6 : y + (y2 - y1) * sy;
    context.fillStyle = colour(face.label);
    context.fillRect(x - line / 2, top, textWidth, size + 6);
    context.fillStyle = "#fff";
    context.fillText(text, x + 4 - line / 2, top + 3);
  });
}

function signed(value) {
  return `${value >= 0 ? "+" : "−"}${Math.abs(value).toFixed(2)}`;
}

function showFaces(faces) {
  const list = byId("faces");
  list.replaceChildren();
  faces.forEach((face, i) => {
    const item = document.createElement("li");
    item.className = "face";
    item.style.setProperty("--colour", colour(face.label));
    item.dataset.face = String(i + 1);
    const title = document.createElement("h2");
    const label = document.createElement("span");
    label.className = "face-label";
    label.textContent = face.label;
    title.append(`${i + 1}. `, label, ` ${face.score.toFixed(2)}`);
    item.append(title);
    if (face.valence != null && face.arousal != null) {
      const affect = document.createElement("p");
      affect.className = "affect";
      affect.textContent = `valence ${signed(face.valence)} · arousal ${signed(face.arousal)}`;
      item.append(affect);
    }
    const probs = Object.entries(face.probs).sort((a, b) => b[1] - a[1]);
    for (const [name, p] of probs) {
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.style.setProperty("--colour", colour(name));
      const nameCell = document.createElement("span");
      nameCell.textContent = name;
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = `${(100 * p).toFixed(1)}%`;
      track.append(fill);
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = p.toFixed(2);
      bar.append(nameCell, track, value);
      item.append(bar);
    }
    if (shown.photo) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "explain";
      button.textContent = "Show heatmap";
      button.addEventListener("click", () => explainFace(i + 1));
      item.append(button);
    }
    list.append(item);
  });
}

async function explainFace(number) {
  const item = byId("faces").querySelector(`[data-face="${number}"]`);
  if (!shown.photo || !item) return;
  setStatus(`heatmap of face ${number}…`);
  const form = new FormData();
  form.append("file", shown.photo, shown.photo.name);
  try {
    const response = await send(`v1/explain?face=${number}`, form);
    const label = response.headers.get("X-Label");
    const score = Number(response.headers.get("X-Score")).toFixed(2);
    const picture = document.createElement("img");
    picture.src = URL.createObjectURL(await response.blob());
    picture.alt = `Grad-CAM heatmap of face ${number}: ${label}`;
    const caption = document.createElement("figcaption");
    caption.textContent = `${label} ${score} · Grad-CAM, one view of the crop; red: the ` +
      "regions that weigh most for the class, blue: least";
    const figure = document.createElement("figure");
    figure.className = "heatmap";
    figure.append(picture, caption);
    item.querySelector(".heatmap")?.remove();
    item.append(figure);
    setStatus(`heatmap of face ${number}: ${label} ${score}`);
  } catch (error) {
    setStatus(`heatmap of face ${number}: ${error.message}`, true);
  }
}

function faceAt(event) {
  const bounds = canvas.getBoundingClientRect();
  const x = ((event.clientX - bounds.left) * canvas.width) / bounds.width / shown.scale;
  const y = ((event.clientY - bounds.top) * canvas.height) / bounds.height / shown.scale;
  const index = shown.faces.findIndex((face) => {
    const [x1, y1, x2, y2] = face.box || [0, 0, Infinity, Infinity];
    return x >= x1 && x <= x2 && y >= y1 && y <= y2;
  });
  return index + 1;
}

function facesText(faces) {
  return faces.length === 1 ? "1 face" : `${faces.length || "no"} faces`;
}

async function onPhoto(file) {
  stopCamera();
  setStatus(`sending ${file.name}…`);
  try {
    const picture = await createImageBitmap(file);
    const { result, ms } = await predict(file, file.name);
    shown = { photo: file, faces: result.faces, scale: picture.width / result.width };
    draw(picture, picture.width, picture.height, result);
    showFaces(result.faces);
    const hint = result.faces.length ? " · click a face for its heatmap" : "";
    setStatus(`${file.name}: ${facesText(result.faces)} · ${Math.round(ms)} ms${hint}`);
  } catch (error) {
    setStatus(`${file.name}: ${error.message}`, true);
  }
}

function grabFrame() {
  const frame = document.createElement("canvas");
  frame.width = video.videoWidth;
  frame.height = video.videoHeight;
  frame.getContext("2d").drawImage(video, 0, 0);
  return frame;
}

async function cameraStep() {
  if (!camera.stream) return;
  const started = performance.now();
  try {
    const frame = grabFrame();
    const blob = await new Promise((resolve) => frame.toBlob(resolve, "image/jpeg", 0.85));
    const index = camera.frames;
    const detect = !camera.boxes.length || index >= camera.next;
    const { result, ms } = await predict(blob, "frame.jpg", detect ? null : camera.boxes);
    if (!camera.stream) return;
    if (detect) {
      const boxes = result.faces.map((face) => face.box).filter(Boolean);
      const unsure = result.faces.some((face) => face.detection_score < SURE_SCORE);
      const changed = boxes.length !== camera.boxes.length;
      camera.next = index + (changed || unsure ? 1 : DETECT_EVERY);
      camera.boxes = boxes;
      camera.detections += 1;
    }
    draw(frame, frame.width, frame.height, result);
    showFaces(result.faces);
    camera.frames += 1;
    camera.busy += ms;
    const rate = camera.frames / ((performance.now() - camera.started) / 1000);
    const status = byId("status");
    status.dataset.frames = String(camera.frames);
    status.dataset.detections = String(camera.detections);
    setStatus(`webcam: ${facesText(result.faces)} · ${rate.toFixed(1)} frames/s · ` +
      `${Math.round(camera.busy / camera.frames)} ms per request · ` +
      `faces detected in ${camera.detections} of ${camera.frames} frames`);
  } catch (error) {
    stopCamera();
    setStatus(`webcam: ${error.message}`, true);
    return;
  }
  const interval = 1000 / Number(byId("fps").value);
  camera.timer = setTimeout(cameraStep, Math.max(0, interval - (performance.now() - started)));
}

async function startCamera() {
  shown = { photo: null, faces: [], scale: 1 };
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus("this browser gives no webcam access to this page (it needs https or localhost)", true);
    return;
  }
  try {
    camera.stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 } },
      audio: false,
    });
  } catch (error) {
    setStatus(`webcam: ${error.message}`, true);
    return;
  }
  video.srcObject = camera.stream;
  await video.play();
  Object.assign(camera, {
    frames: 0, busy: 0, started: performance.now(), boxes: [], next: 0, detections: 0,
  });
  byId("camera").textContent = "Stop webcam";
  byId("camera").classList.add("active");
  setStatus("webcam: waiting for the first answer…");
  cameraStep();
}

function stopCamera() {
  if (!camera.stream) return;
  clearTimeout(camera.timer);
  camera.stream.getTracks().forEach((track) => track.stop());
  camera.stream = null;
  video.srcObject = null;
  byId("camera").textContent = "Start webcam";
  byId("camera").classList.remove("active");
}

byId("file").addEventListener("change", (event) => {
  const [file] = event.target.files;
  if (file) onPhoto(file);
  event.target.value = "";
});
byId("camera").addEventListener("click", () => {
  if (camera.stream) {
    stopCamera();
    setStatus("webcam stopped");
  } else {
    startCamera();
  }
});
canvas.addEventListener("click", (event) => {
  const number = shown.photo ? faceAt(event) : 0;
  if (number) explainFace(number);
});
byId("key").addEventListener("change", describeModel);
describeModel();
