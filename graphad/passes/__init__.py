"""Graph -> Graph passes: reverse-ad, forward-ad, vmap, activity analysis, simplify, cse, dce, and the pass manager."""
