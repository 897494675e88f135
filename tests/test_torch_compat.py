"""A training script written against PyTorch's API runs unchanged after `import tracegrad as torch`
(and, as a check on the script, under PyTorch itself)."""
import pytest

SCRIPT = '''
import math
torch.manual_seed(0)
V, T, C = 16, 8, 32
data = torch.randint(0, V, (64, T + 1))
data[:, 1::2] = (data[:, 0:-1:2] + 1) % V             # a pattern to learn: odd positions follow even ones
ds = torch.utils.data.TensorDataset(data[:, :-1], data[:, 1:])
loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True)


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ln = torch.nn.LayerNorm(C)
        self.qkv = torch.nn.Linear(C, 3 * C)
        self.proj = torch.nn.Linear(C, C)
        self.register_buffer("mask", torch.tril(torch.ones(T, T)).view(1, T, T))

    def forward(self, x):
        q, k, v = self.qkv(self.ln(x)).chunk(3, dim=-1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C)
        att = att.masked_fill(self.mask == 0, float("-inf"))
        return x + self.proj(torch.nn.functional.softmax(att, dim=-1) @ v)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(V, C)
        self.pos = torch.nn.Parameter(torch.zeros(T, C))
        self.blocks = torch.nn.ModuleList([Block() for _ in range(2)])
        self.head = torch.nn.Sequential(torch.nn.LayerNorm(C), torch.nn.Linear(C, 4 * C), torch.nn.GELU(),
                                        torch.nn.Dropout(0.1), torch.nn.Linear(4 * C, V))
        self.apply(self._init)

    def _init(self, m):
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, mean=0.0, std=0.05)
            torch.nn.init.zeros_(m.bias)

    def forward(self, x):
        h = self.emb(x) + self.pos
        for b in self.blocks:
            h = b(h)
        return self.head(h)


model = Net()
n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=12)
losses = []
for epoch in range(12):
    model.train()
    for x, y in loader:
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.view(-1, V), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    sched.step()
model.eval()
with torch.no_grad():
    pred = model(data[:, :-1]).argmax(dim=-1)
    acc = (pred[:, 0::2] == data[:, 1::2]).float().mean().item()
state = {k: v.detach().clone() for k, v in model.state_dict().items()}
'''


def _run(import_line):
    ns = {}
    exec(compile(import_line + "\n" + SCRIPT, "<pytorch-style script>", "exec"), ns)
    return ns


@pytest.mark.parametrize("import_line", ["import tracegrad as torch", "import torch"])
def test_pytorch_script_runs(import_line):
    if import_line == "import torch":
        pytest.importorskip("torch")
    ns = _run(import_line)
    losses = ns["losses"]
    assert len(losses) == 48 and ns["n_params"] > 10_000
    assert sum(losses[-4:]) / 4 < 0.75 * sum(losses[:4]) / 4
    assert ns["acc"] > 0.9                  # the copied positions are learned
    assert "blocks.1.qkv.weight" in ns["state"] and "blocks.0.mask" in ns["state"]


def test_missing_name_says_so():
    import tracegrad as torch
    with pytest.raises(AttributeError, match="not part of the PyTorch subset"):
        torch.fft
