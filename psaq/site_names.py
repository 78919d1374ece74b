"""The quantizer sites every model family has: one name per tensor of a transformer's forward pass.

Plain data, read by the families (which declare their own sites beyond these) and by the site
sets of ``psaq.quant.sites``; it imports nothing, so neither side is keyed by the other's code.
"""

# The sites every family has, with the tensor each is. A family declares its own beyond these
# (``Family.site_names``: Swin's bias table and patch merging, ViT's positional embedding, ...).
CORE_SITES: dict[str, str] = {
    "input": "the input image (input of the patch-embedding convolution)",
    "patch_embed.proj": "the patch-embedding convolution's output, before the patch embedding's norm",
    "patch_embed": "the patch embedding's output",
    "block.norm1": "each block's first LayerNorm output (the attention's input)",
    "attn.qkv": "the qkv projection's output",
    "attn.scores": "q·kᵀ·scale, before softmax (before any relative-position bias)",
    "attn.probs": "the attention probabilities, softmax(q·kᵀ) (left float by the paper's sets)",
    "attn.context": "softmax(q·kᵀ)·v with heads concatenated (the output projection's input)",
    "attn.proj": "the attention's output projection",
    "block.residual1": "each block's first residual sum",
    "block.norm2": "each block's second LayerNorm output (the MLP's input)",
    "mlp.act": "the MLP's GELU output (the second MLP layer's input)",
    "mlp.fc2": "the MLP's output",
    "block.residual2": "each block's second residual sum",
    "head_input": "the classifier's input (the class token after the final norm, or the pooled features)",
    "logits": "the classifier's output",
    "linear.input": "the input of every linear layer",
}
# the inputs of the matrix products every family has (a family's ``matmul_inputs`` default)
MATMUL_INPUTS = ("input", "attn.qkv", "attn.context", "mlp.act", "head_input")
