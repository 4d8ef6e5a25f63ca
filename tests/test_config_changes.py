"""alexnet_jax/config_changes.py: every config key of every config variant has exactly one resume
class (run, optimizer or experiment); docs/resuming.md, the independent, human-written record,
lists each key once with that class, the keys no allow_changed lets through, and the values an
old run's missing keys read as; and compare() sorts changes into those classes, refusing
experiment changes unless allowed."""
import os
import re

import pytest

from alexnet_jax import config_changes as cc
from alexnet_jax.errors import UserError
from tests.helpers import alexnet_config
from tests import helpers

VARIANTS = (None, 'demo', 'two_gpu', 'tiny')


def resuming_page() -> str:
  with open(os.path.join(helpers.ROOT, 'docs', 'resuming.md'), encoding='utf-8') as f:
    return f.read()


def resuming_table() -> dict[str, list[tuple[str, str]]]:
  """{key: [(class, why), ...]} of docs/resuming.md's key table."""
  rows: dict[str, list[tuple[str, str]]] = {}
  for line in resuming_page().splitlines():
    m = re.match(r'^\| `([a-z_.0-9]+)` \| (.+?) \| (.+?) \|$', line)
    if m:
      rows.setdefault(m.group(1), []).append((m.group(2), m.group(3)))
  return rows


@pytest.mark.parametrize('variant', VARIANTS)
def test_every_config_leaf_has_exactly_one_class(variant):
  keys = cc.leaf_keys(alexnet_config.get_config(variant))
  assert len(keys) == len(set(keys))
  missing = sorted(set(keys) - set(cc.KEYS))
  stale = sorted(set(cc.KEYS) - set(keys))
  assert not missing, f'config keys without a resume class (add them to KEYS): {missing}'
  assert not stale, f'KEYS names keys the config no longer has: {stale}'
  config = alexnet_config.get_config(variant)
  for key, rule in cc.KEYS.items():
    assert rule.class_for(config) in (cc.RUN, cc.OPTIMIZER, cc.EXPERIMENT), key
    assert not (rule.fixed and rule.cls != cc.EXPERIMENT), key
    if rule.when:
      assert rule.when[0] in cc.KEYS and rule.when[2] != rule.cls, key


def test_resuming_page_lists_every_key_once_with_its_class():
  rows = resuming_table()
  assert set(rows) == set(cc.KEYS), sorted(set(rows) ^ set(cc.KEYS))
  for key, rule in cc.KEYS.items():
    assert len(rows[key]) == 1, f'{key} is listed {len(rows[key])} times'
    assert rows[key][0][0] == rule.describe(), key


def test_resuming_page_table_fails_on_a_key_it_lacks(monkeypatch):
  """The table check can fail: a key added to KEYS and not to the page is caught."""
  monkeypatch.setitem(cc.KEYS, 'train.new_key', cc.Rule(cc.RUN, 'bookkeeping'))
  with pytest.raises(AssertionError, match='train.new_key'):
    test_resuming_page_lists_every_key_once_with_its_class()


def test_resuming_page_names_the_keys_never_allowed():
  """The rows whose why says 'never allowed' are the keys with fixed=True, and the page's
  section on allow_changed names each of them."""
  fixed = {key for key, rule in cc.KEYS.items() if rule.fixed}
  never = {key for key, [(_, why)] in resuming_table().items() if 'never allowed' in why}
  assert never == fixed
  page = resuming_page()
  section = page[page.index('## Letting a refused change through'):]
  section = section[:section.index('\n## ')]
  assert fixed <= set(re.findall(r'`([a-z_]+\.[a-z_]+)`', section))


def test_resuming_page_lists_what_an_old_runs_missing_keys_read_as():
  page = resuming_page()
  listed = dict(re.findall(r'^ *- `([a-z_.]+)` reads as `([^`]+)`', page, re.MULTILINE))
  assert listed == {key: repr(value) for key, value in cc.ADDED_KEYS.items()}


def changed(**overrides):
  config = alexnet_config.get_config()
  for key, value in overrides.items():
    section, name = key.split('__')
    config[section][name] = value
  return config


def test_compare_sorts_changes_into_the_three_classes():
  saved = alexnet_config.get_config().to_dict()
  same = cc.compare(saved, alexnet_config.get_config(), 7)
  assert not same.keys and same.lines() == []
  c = cc.compare(saved, changed(input__workers=1, train__log_every_steps=10,
                                optimizer__lr=0.001, model__conv_impl='halves'), 7)
  assert c.run == {'input.workers': (-1, 1), 'train.log_every_steps': (50, 10),
                   'model.conv_impl': ('auto', 'halves')}
  assert c.optimizer == {'optimizer.lr': (0.01, 0.001)}
  lines = c.lines()
  assert lines[0].startswith('note: resuming at step 7') and 'input.workers -1 -> 1' in lines[0]
  assert lines[1] == 'optimizer.lr 0.01 -> 0.001 at step 7'
  # The evaluation frequency drives the plateau rule (the default), not a constant lr.
  assert 'train.eval_every_epochs' in cc.compare(
      saved, changed(train__eval_every_epochs=2.0), 7).optimizer
  assert 'train.eval_every_epochs' in cc.compare(
      saved, changed(train__eval_every_epochs=2.0, optimizer__schedule='constant'), 7).run
  assert 'train.num_epochs' in cc.compare(
      saved, changed(train__num_epochs=100, optimizer__schedule='cosine'), 7).optimizer
  # 1 and 1.0 are the same value (a JSON round trip may turn one into the other).
  assert not cc.compare(saved, changed(train__eval_every_epochs=1), 7).keys


def test_compare_refuses_experiment_changes_unless_allowed():
  saved = alexnet_config.get_config().to_dict()
  with pytest.raises(UserError) as e:
    cc.compare(saved, changed(model__norm='none'), 3)
  message = str(e.value)
  assert message.startswith("config.model.norm changed since the checkpoint at step 3 "
                            "('lrn' -> 'none')") and '\n' not in message
  assert '--config.train.allow_changed=model.norm' in message
  allowed = cc.compare(saved, changed(model__norm='none', train__allow_changed='model.norm'), 3)
  assert allowed.allowed == {'model.norm': ('lrn', 'none')}
  assert 'allowed by train.allow_changed' in allowed.lines()[-1]
  # Keys that change the checkpoint's shapes are never let through.
  with pytest.raises(UserError, match='model.num_classes changed.*shapes'):
    cc.compare(saved, changed(model__num_classes=10, train__allow_changed='model.num_classes'), 3)
  with pytest.raises(UserError, match='unknown key'):
    cc.allowed_keys(changed(train__allow_changed='model.no_such'))
  for key in ('seed', 'train.batch_size', 'model.dropout', 'input.mean'):
    assert cc.KEYS[key].cls == cc.EXPERIMENT, key


def test_a_key_added_later_reads_as_what_an_old_run_did():
  """A run stored before model.norm existed ran LRN (or nothing, with model.lrn=False): its
  missing key reads as 'lrn', so the same config resumes without a note and a change to batch
  norm is refused like any model switch."""
  saved = alexnet_config.get_config().to_dict()
  del saved['model']['norm']
  assert cc.ADDED_KEYS['model.norm'] == 'lrn'
  assert not cc.compare(saved, alexnet_config.get_config(), 5).keys
  with pytest.raises(UserError) as e:
    cc.compare(saved, changed(model__norm='batchnorm'), 5)
  assert str(e.value).startswith("config.model.norm changed since the checkpoint at step 5 "
                                 "('lrn' -> 'batchnorm')")
  assert cc.KEYS['model.norm'].cls == cc.EXPERIMENT


def stored_with_model_lrn(lrn, norm='lrn'):
  """A config as the code before model.norm became the one normalisation key stored it: the
  old switch model.lrn beside model.norm (norm=None: from before model.norm existed too)."""
  saved = alexnet_config.get_config().to_dict()
  saved['model']['lrn'] = lrn
  if norm is None:
    del saved['model']['norm']
  else:
    saved['model']['norm'] = norm
  return saved


@pytest.mark.parametrize('lrn,norm,reads_as', [
    (False, 'lrn', 'none'), (True, 'lrn', 'lrn'), (False, 'none', 'none'),
    (True, 'batchnorm', 'batchnorm'), (False, None, 'none'), (True, None, 'lrn')])
def test_a_run_stored_with_model_lrn_resumes_as_its_model_norm(lrn, norm, reads_as):
  """The mapping of the removed key (lrn=False, the no-LRN ablation: norm 'none'; lrn=True: the
  norm stored beside it, or 'lrn'): the run resumes under that norm with no change noted, and
  any other norm is refused as a model switch."""
  saved = stored_with_model_lrn(lrn, norm)
  upgraded = cc.upgrade(saved)
  assert upgraded['model']['norm'] == reads_as and 'lrn' not in upgraded['model']
  assert saved['model']['lrn'] is lrn  # the stored dict itself is left as it was
  assert not cc.compare(saved, changed(model__norm=reads_as), 6).keys
  other = 'batchnorm_all'
  with pytest.raises(UserError, match=f"model.norm changed .*'{reads_as}' -> '{other}'"):
    cc.compare(saved, changed(model__norm=other), 6)


def test_todays_configs_upgrade_to_themselves():
  for variant in VARIANTS:
    config = alexnet_config.get_config(variant).to_dict()
    assert cc.upgrade(config) == config


def test_model_lrn_is_an_unknown_config_key(tmp_path):
  """model.norm is the one normalisation key: launch.py refuses --config.model.lrn as an
  unknown key, one error line, exit 2, nothing written."""
  assert 'lrn' not in alexnet_config.get_config().model
  workdir = tmp_path / 'run'
  proc = helpers.launch(str(workdir), '--config.model.lrn=False', check=False, timeout=120)
  assert proc.returncode == 2, proc.stdout + proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: unknown config key lrn'), proc.stderr
  assert not workdir.exists()


def test_a_run_from_before_dropout_placement_is_not_resumed_with_the_papers_placement():
  """Runs stored before model.dropout_placement dropped torchvision's units (what
  alexnet.from_config reads for them): today's default, the paper's placement, is a change."""
  saved = alexnet_config.get_config().to_dict()
  del saved['model']['dropout_placement']
  with pytest.raises(UserError,
                     match=r"model.dropout_placement changed .*'torchvision' -> 'paper'"):
    cc.compare(saved, alexnet_config.get_config(), 5)
  assert not cc.compare(saved, changed(model__dropout_placement='torchvision'), 5).keys
