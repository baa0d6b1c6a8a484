"""The experiment behind ``loss.words``: does a from-scratch BEiT-3 + MPG learn "on the left" /
"at the top" when its [CLS] token must also name the command's words?

Trains BEiT-3 and the MPG of ``cpu_small`` (8 x 8 grid) on the mask prior M_p (Eq. 3) of
single frames of the spatial expressions of 400 training videos (seed 1000; twins that only
the relation word tells apart), batches of 32, lr 1e-3, BCE x 10 + soft dice on the prior;
with ``WORDS > 0`` plus WORDS x a bag-of-words BCE (summed over the vocabulary) of a Linear
head on V_cls (``training.losses.WordPresence``). Every 200 steps prints the share of held-out
spatial expressions (seed 4242, 40 videos, frames 0 / 12 / 23) whose prior sits more on the named
twin than on the other (chance 0.5). About 4 minutes for 1,200 steps on one core.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/words_experiment.py 0.1   # the words term on
    OMP_NUM_THREADS=1 .venv/bin/python scripts/words_experiment.py 0     # off
    (extra arguments are model overrides, e.g. beit3.pos_init=sincos)
"""
import sys, torch, numpy as np, time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import torch.nn.functional as F
from mpg_sam2_ros.core.config import load_model_config
from mpg_sam2_ros.core.modeling.build import build_model
from mpg_sam2_ros.core.pipeline import load_tokenizer
from mpg_sam2_ros.training.synthetic import generate_video
from mpg_sam2_ros.training.datasets import ReferringClip
from mpg_sam2_ros.training.datasets.augment import Augment
from mpg_sam2_ros.training.forward import make_batch, _global_context
from mpg_sam2_ros.training.losses import WordPresence, prior_dice_loss, prior_loss
torch.manual_seed(0); torch.set_num_threads(1)
w_bow = float(sys.argv[1]); extra = sys.argv[2:]
cfg = load_model_config('cpu_small', ['beit3.patch_size=16'] + extra)
model = build_model(cfg).train(); tok = load_tokenizer(cfg)
V = cfg.beit3.vocab_size; D = cfg.beit3.embed_dim
words = WordPresence(D, V, tok.special_ids)
def items(seed, n):
    out = []
    for i in range(n):
        v = generate_video(seed, i)
        for e in v.expressions:
            if e.type == 'spatial': out.append((v, e))
    return out
train = items(1000, 400); hold = items(4242, 40)
print('train', len(train), 'hold', len(hold), flush=True)
params = [p for n,p in model.named_parameters() if n.startswith(('multimodal_encoder','mask_prior'))] + list(words.parameters())
opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=5e-4)
aug = Augment(hflip=0.5, photometric=True); rng = np.random.default_rng(0)
def clip_of(v, e, f):
    return ReferringClip(video=v.name, exp_id='', text=e.text, exp_type=e.type, frame_names=['0'], frames=v.frames[f:f+1], masks=v.labels[f:f+1]==e.target)
def evaluate():
    model.eval(); ok = n = 0
    with torch.no_grad():
        for v, e in hold:
            for f in (0, 12, 23):
                t = v.labels[f] == e.target; o = v.labels[f] == e.distractors[0]
                if t.sum() < 20 or o.sum() < 20: continue
                b = make_batch([clip_of(v, e, f)], model, tok)
                pr = _global_context(model, b, True)[1].prior[0, -1]
                up = F.interpolate(pr[None], size=t.shape, mode='bilinear')[0,0].numpy()
                ok += up[t].mean() > up[o].mean(); n += 1
    model.train(); return round(ok / n, 3)
t0 = time.time()
for step in range(1, 1201):
    idx = rng.choice(len(train), 32, replace=False)
    clips = [aug(clip_of(*train[i], int(rng.integers(24))), rng) for i in idx]
    b = make_batch(clips, model, tok)
    mm, ctx = _global_context(model, b, True)
    loss = 10*prior_loss(ctx.prior, b.target) + prior_dice_loss(ctx.prior, b.target)
    if w_bow > 0:
        loss = loss + w_bow * words(mm.cls[:, None], b.ids, b.padding)
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step()
    if step % 200 == 0: print(w_bow, extra, step, round(loss.item(), 3), 'held', evaluate(), round(time.time()-t0), flush=True)
