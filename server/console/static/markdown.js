// A small Markdown subset for model output — paragraphs, fenced code blocks, inline code and
// bold — built as DOM nodes. Text only ever reaches the page through createTextNode or
// textContent, so nothing a model writes (<script>, an image with onerror, a link with
// javascript:) can become an element: it shows as the characters it is.

function textNode(text) {
  return document.createTextNode(text);
}

const INLINE = /`([^`\n]+)`|\*\*([^*\n]+?)\*\*/g;

function appendInline(parent, text) {
  let last = 0;
  for (const match of text.matchAll(INLINE)) {
    parent.append(textNode(text.slice(last, match.index)));
    const el = document.createElement(match[1] !== undefined ? "code" : "strong");
    el.textContent = match[1] !== undefined ? match[1] : match[2];
    parent.append(el);
    last = match.index + match[0].length;
  }
  parent.append(textNode(text.slice(last)));
}

export function renderMarkdown(container, source) {
  const out = [];
  let paragraph = [];
  let code = null; // lines of the open fenced block, or null outside one
  let lang = "";

  const flushParagraph = () => {
    if (paragraph.length === 0) return;
    const p = document.createElement("p");
    appendInline(p, paragraph.join("\n"));
    out.push(p);
    paragraph = [];
  };
  const flushCode = () => {
    const pre = document.createElement("pre");
    const el = document.createElement("code");
    if (lang) el.dataset.lang = lang;
    el.textContent = code.join("\n");
    pre.append(el);
    out.push(pre);
    code = null;
  };

  for (const line of source.split("\n")) {
    const fence = line.trimStart().startsWith("```");
    if (code !== null) {
      if (fence) flushCode();
      else code.push(line);
    } else if (fence) {
      flushParagraph();
      code = [];
      lang = line.trim().slice(3).trim();
    } else if (line.trim() === "") {
      flushParagraph();
    } else {
      paragraph.push(line);
    }
  }
  if (code !== null) flushCode(); // still streaming: show the block so far
  flushParagraph();
  container.replaceChildren(...out);
}
