// The page only calls the JSON API; no build step.
const $ = (id) => document.getElementById(id);
let vocabulary = null;

function fill(select, options, value) {
  select.innerHTML = options.map((o) => `<option value="${o}">${o}</option>`).join("");
  if (value) select.value = value;
}

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({ detail: response.statusText }));
  if (!response.ok) {
    const detail = Array.isArray(body.detail) ? body.detail.map((d) => d.msg).join("; ") : body.detail;
    throw new Error(detail || `HTTP ${response.status}`);
  }
  return body;
}

function figure(src, text) {
  const item = document.createElement("figure");
  const image = document.createElement("img");
  image.src = src;
  image.alt = text;
  const caption = document.createElement("figcaption");
  caption.textContent = text;
  item.append(image, caption);
  return item;
}

// The model that draws, captions and samples: "" is the served checkpoint, else a model by name (/api/models).
function chosenModel() {
  return $("model").value ? { model: $("model").value } : {};
}

function promptFromPickers() {
  $("prompt").value = [$("fg-adjective").value, $("fg-hue").value, $("digit").value, "on",
    $("bg-adjective").value, $("bg-hue").value].join(" ");
}

async function generate(event) {
  event.preventDefault();
  $("generate-message").textContent = "";
  $("generate-button").disabled = true;
  try {
    const body = await api("/api/generate", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prompt: $("prompt").value, n: Number($("count").value),
                             temperature: Number($("temperature").value), ...chosenModel() }),
    });
    // Each image under the caption it was drawn for ("*" blanks in the prompt are filled per image).
    $("generated").replaceChildren(...body.images.map((src, i) => figure(src, body.captions[i])));
    $("generate-message").textContent = body.warnings.join(" ");
  } catch (error) {
    $("generated").replaceChildren();
    $("generate-message").textContent = error.message;
  } finally {
    $("generate-button").disabled = false;
  }
}

// Drawing: a 280x280 canvas, ink and paper chosen from the palette.
const canvas = $("canvas");
const context = canvas.getContext("2d");
let drawing = false;

function clearCanvas() {
  context.fillStyle = $("paper").value;
  context.fillRect(0, 0, canvas.width, canvas.height);
}

function stroke(event) {
  if (!drawing) return;
  const box = canvas.getBoundingClientRect();
  const x = (event.clientX - box.left) * (canvas.width / box.width);
  const y = (event.clientY - box.top) * (canvas.height / box.height);
  context.fillStyle = $("ink").value;
  context.beginPath();
  context.arc(x, y, 14, 0, 2 * Math.PI);
  context.fill();
}

async function captionBlob(blob) {
  $("caption-result").textContent = "…";
  const form = new FormData();
  form.append("file", blob, "drawing.png");
  try {
    const model = chosenModel().model;
    const body = await api("/api/caption" + (model ? `?model=${encodeURIComponent(model)}` : ""),
                           { method: "POST", body: form });
    $("caption-result").textContent = body.caption;
    $("seen").src = body.seen;
  } catch (error) {
    $("caption-result").textContent = error.message;
  }
}

// Completion: the canvas (or an upload) with one half kept; the model draws the other half.
async function completeBlob(blob) {
  const form = new FormData();
  form.append("file", blob, "image.png");
  form.append("keep", $("keep").value);
  const mask = $("complete-mask").files[0];   // a 28x28 mask, white = kept: replaces the half
  if (mask) form.append("mask", mask, "mask.png");
  form.append("n", $("complete-n").value);
  if ($("complete-prompt").value.trim()) form.append("prompt", $("complete-prompt").value);
  $("complete-message").textContent = "completing…";
  try {
    const body = await api("/api/complete", { method: "POST", body: form });
    $("complete-message").textContent = "";
    $("completions").replaceChildren(...body.completions.map((item) => figure(item.image, item.caption)));
  } catch (error) {
    $("completions").replaceChildren();
    $("complete-message").textContent = error.message;
  }
}

async function sample() {
  $("sample-message").textContent = "";
  try {
    const body = await api("/api/sample", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ n: 8, ...chosenModel() }),
    });
    $("samples").replaceChildren(...body.samples.map((s) => figure(s.image, s.caption)));
  } catch (error) {
    $("sample-message").textContent = error.message;
  }
}

// Chat: a prompt with <image> placeholders bound, in order, to the attached images.
const attachments = [];

function attach(blob) {
  attachments.push(blob);
  const image = document.createElement("img");
  image.src = URL.createObjectURL(blob);
  image.alt = `attached image ${attachments.length}`;
  $("chat-attachments").append(image);
}

// Text with <image> placeholders -> a line of words and inline pictures.
function mixedLine(who, text, sources) {
  const line = document.createElement("p");
  line.className = "chat-line";
  const speaker = document.createElement("b");
  speaker.textContent = `${who}: `;
  line.append(speaker);
  let next = 0;
  for (const part of text.split(/(<image>)/)) {
    if (part === "<image>" && next < sources.length) {
      const image = document.createElement("img");
      image.src = sources[next++];
      image.alt = `${who} image ${next}`;
      image.className = "inline";
      line.append(image);
    } else if (part.trim()) {
      line.append(document.createTextNode(` ${part.trim()} `));
    }
  }
  return line;
}

async function chat(event) {
  event.preventDefault();
  const form = new FormData();
  form.append("prompt", $("chat-prompt").value);
  attachments.forEach((blob, i) => form.append("images", blob, `image${i}.png`));
  $("chat-message").textContent = "thinking…";
  $("chat-button").disabled = true;
  try {
    const body = await api("/api/continue", { method: "POST", body: form });
    $("chat-message").textContent = body.warnings.join(" ");
    $("chat-log").append(mixedLine("you", body.prompt, body.seen),
      ...body.continuations.map((c) => mixedLine("model", c.text, c.images)));
  } catch (error) {
    $("chat-message").textContent = error.message;
  } finally {
    $("chat-button").disabled = false;
  }
}

// Search: the memory bank's documents nearest to a text or to the drawing, best first.
async function search(query) {
  const form = new FormData();
  if (typeof query === "string") form.append("text", query); else form.append("image", query, "drawing.png");
  form.append("k", $("search-k").value);
  $("search-message").textContent = "searching…";
  try {
    const body = await api("/api/search", { method: "POST", body: form });
    $("search-message").textContent = `${body.hits.length} hits in ${body.memory} for ${body.query}`;
    $("search-hits").replaceChildren(...body.hits.map((h) => figure(h.image, `${h.rank}. ${h.caption} (${h.score.toFixed(2)})`)));
  } catch (error) {
    $("search-hits").replaceChildren();
    $("search-message").textContent = error.message;
  }
}

async function start() {
  vocabulary = await api("/api/vocabulary");
  fill($("fg-adjective"), vocabulary.adjectives, "dark");
  fill($("fg-hue"), vocabulary.hues, "green");
  fill($("digit"), vocabulary.digits, "eight");
  fill($("bg-adjective"), vocabulary.adjectives, "bright");
  fill($("bg-hue"), vocabulary.hues, "cyan");
  const colorOptions = vocabulary.colors.map((c) => `<option value="rgb(${c.rgb.join(",")})">${c.name}</option>`);
  $("ink").innerHTML = colorOptions.join("");
  $("paper").innerHTML = colorOptions.join("");
  $("ink").selectedIndex = vocabulary.colors.findIndex((c) => c.name === "plain white");
  $("paper").selectedIndex = vocabulary.colors.findIndex((c) => c.name === "dark blue");
  const prompts = [];
  for (const color of vocabulary.colors) for (const digit of vocabulary.digits) prompts.push(`${color.name} ${digit} on`);
  $("palette-prompts").innerHTML = prompts.map((p) => `<option value="${p}">`).join("");
  for (const id of ["fg-adjective", "fg-hue", "digit", "bg-adjective", "bg-hue"]) $(id).addEventListener("change", promptFromPickers);
  clearCanvas();
  const health = await api("/api/health");
  $("status").textContent = `model: ${health.checkpoint}`;
  const served = (await api("/api/models")).models;
  $("model").innerHTML = served.map((m) => `<option value="${m.name ?? ""}">${m.name ?? health.checkpoint} ` +
                                    `(${m.generator})</option>`).join("");
}

$("generate-form").addEventListener("submit", generate);
$("sample-button").addEventListener("click", sample);
$("complete-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const upload = $("complete-upload").files[0];
  if (upload) completeBlob(upload); else canvas.toBlob(completeBlob, "image/png");
});
$("clear-button").addEventListener("click", clearCanvas);
$("chat-form").addEventListener("submit", chat);
$("chat-attach-drawing").addEventListener("click", () => canvas.toBlob(attach, "image/png"));
$("chat-upload").addEventListener("change", (event) => { for (const file of event.target.files) attach(file); });
$("chat-clear").addEventListener("click", () => { attachments.length = 0; $("chat-attachments").replaceChildren(); });
$("search-form").addEventListener("submit", (event) => { event.preventDefault(); search($("search-text").value); });
$("search-drawing").addEventListener("click", () => canvas.toBlob(search, "image/png"));
$("paper").addEventListener("change", clearCanvas);
$("caption-button").addEventListener("click", () => canvas.toBlob(captionBlob, "image/png"));
$("upload").addEventListener("change", (event) => { if (event.target.files[0]) captionBlob(event.target.files[0]); });
canvas.addEventListener("pointerdown", (event) => { drawing = true; stroke(event); });
canvas.addEventListener("pointermove", stroke);
window.addEventListener("pointerup", () => { drawing = false; });
start().catch((error) => { $("status").textContent = `error: ${error.message}`; });
