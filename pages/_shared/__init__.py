"""What the pages share, one module per concern (imports go down this list):

- ``layout``: navigation, the page header, plot and small-screen settings, session state;
- ``memory``: what the server process keeps after a visitor leaves (heaps, closed sessions);
- ``models``: the sidebar's model source, loaded predictors and what they compute per image (cached);
- ``images``: the dataset folder, uploads, bundled samples, linked images;
- ``predictions``: prediction tables of the zoo and of a source model on the dataset folder.

Layout and caching only; every number comes from pneumo_core.
"""
