"""The report page's fixed text: its stylesheet, its script (filters and the ``#selftest`` checks) and the
HTML skeleton ``core.report.html.render`` fills with ``str.format`` (so literal braces are doubled)."""

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table.grid{border-collapse:collapse;margin:.5em 0 1em;table-layout:auto}
.wide{max-width:100%;overflow-x:auto}  /* a table too wide for the window scrolls by itself, not the page */
table.grid td,table.grid th{border:1px solid #ccc;padding:.25em .45em;text-align:right;vertical-align:top;
  overflow-wrap:break-word;word-break:normal}
/* a label with a long word (a rule or method name) wraps anywhere rather than push into the next column */
.long{overflow-wrap:anywhere;word-break:break-word}
table.grid td:first-child,table.grid td.m{min-width:6.5em}
table.grid td:first-child,table.grid th:first-child,table.grid td.m,table.grid th.group{text-align:left}
table.grid th.group{text-align:center}
table.grid td.n{white-space:nowrap}
table.grid .paper{background:#f3f0e6;color:#555}table.grid th.paper{font-style:italic}
.mname{border-left:.8em solid #999;padding-left:.3em}
.oracle{color:#7a3b69;font-weight:bold}
.paper-note{font-size:.85em;color:#555;max-width:60em}
details.legend{margin:.3em 0 1em;max-width:60em;font-size:.85em}details.legend summary{cursor:pointer;font-weight:bold}
dl{display:grid;grid-template-columns:minmax(6em,14em) 1fr;gap:.2em 1em;margin:.4em 0}
dt{font-weight:bold;overflow-wrap:anywhere;word-break:break-word}dd{margin:0;overflow-wrap:anywhere;word-break:break-word}
.key{margin-right:1em;white-space:nowrap}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots img{max-width:100%}
.plots figcaption{font-size:.85em;max-width:36em;overflow-wrap:anywhere}
.filters{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ddd;z-index:1}
.filters label{margin-right:1em}
.item{border-top:1px solid #ddd;padding:.5em 0}.item h3{margin:.3em 0;overflow-wrap:anywhere}
.item small{color:#666;font-weight:normal}
.row{display:flex;gap:1em;align-items:flex-start}.prompt{width:16em;flex:none;overflow-wrap:anywhere;word-break:break-word}
.prompt p{font-size:.9em}
img.first,video{width:128px;height:128px;image-rendering:pixelated;background:#000;display:block}
.videos{display:flex;flex-wrap:wrap;gap:.6em;min-width:0}.method{margin:0;width:128px}
.method figcaption{font-size:.8em;width:128px;overflow-wrap:anywhere;word-break:break-word}
.crit{padding-left:1em;margin:.2em 0;color:#555}.crit li{overflow-wrap:anywhere;word-break:break-word}
.crit li.bad{color:#a00}
.success{color:#080}.fail{color:#a00;font-weight:bold}.why{color:#a00}.unscored{color:#666}
.error,.missing{box-sizing:border-box;width:128px;height:128px;font-size:.75em;overflow:auto;overflow-wrap:anywhere;
  word-break:break-word}
.error{color:#a00;border:1px solid #a00}.missing{color:#666;border:1px dashed #999;padding:.3em}
.gt figcaption b{color:#333}
.queries{font-size:.8em;padding-left:1.2em}
"""

JS = """
const cards=[...document.querySelectorAll('.item')];
const sel=id=>document.getElementById(id);
function visible(card){return !card.hidden;}
function applyFilters(){
  const f=sel('f-family').value,s=sel('f-split').value,o=sel('f-outcome').value;let n=0;
  for(const c of cards){
    const show=(!f||c.dataset.family===f)&&(!s||c.dataset.split===s)&&(!o||c.dataset.outcome===o);
    c.hidden=!show;if(show)n++;
    for(const v of c.querySelectorAll('video')){if(!show)v.pause();}
  }
  sel('count').textContent=n+' of '+cards.length+' items';
  observeAll();
}
const observer=('IntersectionObserver' in window)?new IntersectionObserver(es=>{for(const e of es){
  for(const v of e.target.querySelectorAll('video')){if(e.isIntersecting){v.play().catch(()=>{});}else{v.pause();}}}}):null;
function observeAll(){for(const c of cards){if(observer){observer.unobserve(c);if(visible(c))observer.observe(c);}}}
// keep each item's videos (the ground truth first) in step with its first one
setInterval(()=>{for(const c of cards){if(!visible(c))continue;const vs=c.querySelectorAll('video');if(vs.length<2)continue;
  const t=vs[0].currentTime;for(const v of vs){if(Math.abs(v.currentTime-t)>0.15)v.currentTime=t;}}},500);
for(const id of ['f-family','f-split','f-outcome'])sel(id).addEventListener('change',applyFilters);
applyFilters();
// Where each element's contents are drawn: its text and its children's boxes, overflow included.
function drawn(el){const r=document.createRange();r.selectNodeContents(el);return r.getBoundingClientRect();}
function name(el){return (el.tagName.toLowerCase()+(el.className?'.'+el.className:'')+' '+
  (el.textContent||'').trim().replace(/\\s+/g,' ').slice(0,40));}
// Labels that run into their neighbour: any two siblings in a table row, an item's row or its videos whose drawn
// contents intersect (by more than a pixel each way).
function overlaps(){
  const out={pairs:0,rows:0,found:[],where:{}};
  for(const row of document.querySelectorAll('table tr, .item .row, .item .videos, .filters')){
    if(row.closest('[hidden]'))continue;
    const boxes=[...row.children].map(el=>({el,b:drawn(el)})).filter(x=>x.b.width>0&&x.b.height>0);
    out.rows++;
    for(let i=0;i<boxes.length;i++)for(let j=i+1;j<boxes.length;j++){
      out.pairs++;const a=boxes[i].b,b=boxes[j].b;
      const w=Math.min(a.right,b.right)-Math.max(a.left,b.left),h=Math.min(a.bottom,b.bottom)-Math.max(a.top,b.top);
      if(w<=1||h<=1)continue;
      const where=(row.closest('[id]')||{id:''}).id;out.where[where]=(out.where[where]||0)+1;
      if(out.where[where]<=3)out.found.push({a:name(boxes[i].el),b:name(boxes[j].el),w:Math.round(w),h:Math.round(h),
        row:where});
    }
  }
  return out;
}
async function selftest(){
  const out={videos:[],filters:{}};
  out.overlaps=overlaps();
  const first=cards.find(c=>c.querySelector('video'));
  const vids=first?[...first.querySelectorAll('video')]:[];
  if(first)first.scrollIntoView();
  await new Promise(r=>setTimeout(r,300));
  await Promise.all(vids.map(v=>v.play().catch(e=>{out.play_error=String(e);})));
  await new Promise(r=>setTimeout(r,1500));
  for(const v of vids){out.videos.push({src:v.getAttribute('src'),role:v.dataset.role||'method',readyState:v.readyState,
    paused:v.paused,currentTime:v.currentTime,duration:v.duration,error:v.error?v.error.code:null,width:v.videoWidth});}
  for(const [id,attr] of [['f-family','family'],['f-split','split'],['f-outcome','outcome']]){
    const s=sel(id);out.filters[id]={};
    for(const opt of [...s.options].map(o=>o.value).filter(Boolean)){
      s.value=opt;applyFilters();const shown=cards.filter(visible);
      out.filters[id][opt]={shown:shown.length,all_match:shown.every(c=>c.dataset[attr]===opt),
        expected:cards.filter(c=>c.dataset[attr]===opt).length};
    }
    s.value='';applyFilters();
  }
  out.count_text=sel('count').textContent;
  sel('selftest-result').textContent=JSON.stringify(out);
}
if(location.hash==='#selftest')selftest();
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{css}</style></head>
<body>
<h1>{name}</h1>
<p>experiment <code>{experiment_id}</code> ({kind}, variant <code>{variant}</code>), written {created}; {n_items} items.</p>
<h2>Methods</h2>
{summary}
{extra}
<h2>By faculty and split <small>(mean score, items)</small></h2>
{groups}
<h2>Plots</h2>
<p class="colours"><small>Each method keeps its colour in every plot and table:</small> {colours}
<small>(plots of the teacher method alone draw in shades of its colour, one per item or stop reason)</small></p>
<div class="plots">{plots}</div>
<h2>Items <small>(by family, then id)</small></h2>
{items_legend}
<div class="filters">{filters} <span id="count"></span></div>
{cards}
<pre id="selftest-result" hidden></pre>
<script type="application/json" id="report-meta">{meta}</script>
<script>{js}</script>
</body></html>
"""
